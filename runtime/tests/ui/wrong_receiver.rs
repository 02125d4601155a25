use crashonly::prelude::*;

#[derive(Actor, Clone)]
struct Echo;

#[messages]
impl Echo {
    #[message]
    fn consume(self) -> u32 {
        1
    }
}

fn main() {}

use crashonly::prelude::*;

#[derive(Actor, Clone)]
struct Echo;

#[messages]
impl Echo {
    #[message]
    fn stats(&self) -> u32 {
        1
    }
}

fn main() {}

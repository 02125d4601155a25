use crashonly::prelude::*;

#[derive(Actor, Clone)]
struct Echo;

#[messages]
impl Echo {
    #[message(ttl = "soon")]
    fn ping(&self) -> u32 {
        1
    }
}

fn main() {}

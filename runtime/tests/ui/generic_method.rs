use crashonly::prelude::*;

#[derive(Actor, Clone)]
struct Echo;

#[messages]
impl Echo {
    #[message]
    fn echo<T: Clone>(&self, value: T) -> T {
        value
    }
}

fn main() {}

use crashonly::prelude::*;

#[derive(Clone)]
struct NotAnActor;

#[messages]
impl NotAnActor {
    #[message]
    fn ping(&self) -> u32 {
        1
    }
}

fn main() {}

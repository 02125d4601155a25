use crashonly::prelude::*;

#[derive(Actor, Clone)]
#[actor(restart = "sometimes")]
struct Echo;

fn main() {}

use crashonly::prelude::*;

#[derive(Actor, Clone)]
#[actor(entity, restart = "transient")]
struct Session;

fn main() {}

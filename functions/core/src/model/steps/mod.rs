//! Step inputs and outputs: the JSON the state machine passes between handlers.
//!
//! The trigger freezes a [`Run`] (recipe included) into the execution input, so a run is reproducible. Every Task
//! then gets `{action, execution, run, steps}`, where `execution` comes from the context object and `steps` holds
//! every earlier step's output under the step's name.

mod progress;
mod request;
mod states;
mod trigger;

pub use crate::model::time::now;
pub use progress::*;
pub use request::*;
pub use states::*;
pub use trigger::*;

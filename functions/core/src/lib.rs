//! ami-pipeline's domain core: the recipe, step inputs and outputs, naming, tags, errors, and the AWS adapters
//! the Lambda handlers share.

#[cfg(feature = "testing")]
pub mod audit;
pub mod clients;
pub mod contract;
pub mod definition;
pub mod distribution;
pub mod ec2;
pub mod error;
pub mod event;
pub mod image;
pub mod input;
pub mod instance_store;
pub mod lifecycle;
pub mod naming;
pub mod platform;
pub mod recipe;
pub mod rerun;
pub mod runcommand;
pub mod runtime;
pub mod source;
pub mod step;
pub mod steps;
pub mod tags;
#[cfg(feature = "testing")]
pub mod testing;
pub mod userdata;

pub use error::{Error, Result};

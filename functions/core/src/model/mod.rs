//! The plain model: the recipe, the run and every step's input and output, names, tag keys, errors, scripts, and
//! the decisions taken on them alone. No AWS SDK here: `aws` turns these into requests and reads answers back.
//! Imports nothing from `validate` or `aws` (`tests/layers.rs`).

pub mod error;
pub mod event;
pub mod image;
pub mod input;
pub mod instance_store;
pub mod json;
pub mod lifecycle;
pub mod naming;
pub mod platform;
pub mod recipe;
pub mod rerun;
pub mod runcommand;
pub mod sharing;
pub mod steps;
pub mod tags;
pub mod time;
pub mod userdata;

//! ami-pipeline's domain core, in layers whose dependencies go one way, `aws` -> `validate` -> `model`
//! (`tests/layers.rs` fails on an import against it or on a cycle between top-level modules):
//!
//! - [`model`]: the recipe, the run, the steps' inputs and outputs, names, tag keys, errors; no AWS SDK.
//! - [`validate`]: recipe validation.
//! - [`aws`]: the AWS adapters the Lambda handlers share (clients, EC2/SSM/Logs calls, tags, SDK errors, runtime).
//!
//! Built on them: [`definition`] (the state machine), [`step`] (the step contract), [`contract`] (the contract
//! file), and, with the `testing` feature, the handlers' test fixtures and request audit.

pub mod aws;
pub mod definition;
pub mod model;
pub mod validate;

#[cfg(feature = "testing")]
pub mod audit;
pub mod contract;
pub mod step;
#[cfg(feature = "testing")]
pub mod testing;

pub use model::error::{Error, Result};

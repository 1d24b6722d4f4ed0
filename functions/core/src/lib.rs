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

// The paths from before the layers, kept until the other crates use the layered ones; each names the module that
// now holds it (an `aws` module re-exports the `model` module of its name).
pub use aws::{clients, error, image, instance_store, lifecycle, platform, rerun, runcommand, runtime, source, tags};
pub use model::{event, input, naming, sharing as distribution, steps, userdata};

/// Old path of the EC2 calls, launching included (`aws::ec2`, `aws::launch`).
pub mod ec2 {
    pub use crate::aws::ec2::*;
    pub use crate::aws::launch::*;
}

/// Old path of the recipe: its types (`model::recipe`) and the field checks handlers use (`validate`).
pub mod recipe {
    pub use crate::model::recipe::*;
    pub use crate::validate::{KNOWN_REGIONS, MAX_FALLBACKS, check_id, check_region, is_account};
}

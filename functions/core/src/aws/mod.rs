//! The AWS adapters: clients, the EC2/SSM/CloudWatch Logs calls the handlers share, tags as EC2 takes them, SDK
//! errors mapped onto the pipeline's, and the Lambda runtime. Where a module extends the model module of its name
//! (`aws::tags` and `model::tags`), it re-exports it, so a handler takes both from one path. Uses `model` and
//! `validate`; nothing below imports from here (`tests/layers.rs`).

pub mod clients;
pub mod ec2;
pub mod error;
pub mod image;
pub mod instance_store;
pub mod launch;
pub mod lifecycle;
pub mod platform;
pub mod rerun;
pub mod runcommand;
pub mod runtime;
pub mod source;
pub mod tags;

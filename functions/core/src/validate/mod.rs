//! Recipe validation: what serde cannot check (ranges, formats, consistency between sections), as
//! `Recipe::from_json` and `Recipe::validate`, each error naming the field. Uses only `model` (`tests/layers.rs`).

mod fields;
mod recipe;

pub use fields::{KNOWN_REGIONS, MAX_FALLBACKS, check_id, check_region, is_account};

//! AWS configuration and clients, built once per process.
//!
//! Endpoints come from the standard `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` variables, so the same code
//! runs against AWS and against the local stack.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use aws_config::SdkConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};

/// The longest one SDK operation (all its attempts) may take.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(25);

/// Loads the shared SDK configuration: standard retries (3 attempts) and bounded timeouts, so one slow call
/// fails inside the Lambda's own timeout and Step Functions' retry takes over.
pub async fn load_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(10))
                .operation_timeout(OPERATION_TIMEOUT)
                .build(),
        )
        .load()
        .await
}

/// The region the function runs in.
pub fn home_region(config: &SdkConfig) -> String {
    config
        .region()
        .map(|r| r.to_string())
        .unwrap_or_else(|| "us-east-1".to_string())
}

/// One kind of SDK client per region, made on first use and kept: copy, share, publish, retire and cleanup work
/// in several regions from one function. `from_fn` is for tests: `make` returns the (mocked) client for a region.
pub struct RegionalClients<C> {
    make: Arc<dyn Fn(&str) -> C + Send + Sync>,
    cache: Arc<Mutex<HashMap<String, C>>>,
}

impl<C> Clone for RegionalClients<C> {
    fn clone(&self) -> Self {
        RegionalClients {
            make: Arc::clone(&self.make),
            cache: Arc::clone(&self.cache),
        }
    }
}

impl<C: Clone> RegionalClients<C> {
    pub fn from_fn(make: impl Fn(&str) -> C + Send + Sync + 'static) -> Self {
        RegionalClients {
            make: Arc::new(make),
            cache: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub fn get(&self, region: &str) -> C {
        // A poisoned lock only means another thread panicked mid-insert; the map is still usable.
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry(region.to_string())
            .or_insert_with(|| (self.make)(region))
            .clone()
    }
}

/// Builds the per-region clients of one SDK from the shared configuration.
macro_rules! regional {
    ($alias:ident, $sdk:ident) => {
        pub type $alias = RegionalClients<$sdk::Client>;

        impl RegionalClients<$sdk::Client> {
            pub fn from_config(config: &SdkConfig) -> Self {
                let config = config.clone();
                Self::from_fn(move |region| {
                    let conf = $sdk::config::Builder::from(&config)
                        .region(Region::new(region.to_string()))
                        .build();
                    $sdk::Client::from_conf(conf)
                })
            }
        }
    };
}

regional!(Ec2Clients, aws_sdk_ec2);
regional!(SsmClients, aws_sdk_ssm);

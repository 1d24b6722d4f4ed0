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

/// Loads the shared SDK configuration: standard retries (3 attempts) and bounded timeouts, so one slow call
/// fails inside the Lambda's own timeout and Step Functions' retry takes over.
pub async fn load_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .operation_attempt_timeout(Duration::from_secs(10))
                .operation_timeout(Duration::from_secs(25))
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

type MakeClient = dyn Fn(&str) -> aws_sdk_ec2::Client + Send + Sync;

/// EC2 clients per region, made on first use and kept: copy, share, publish, retire and cleanup work in
/// several regions from one function.
#[derive(Clone)]
pub struct Ec2Clients {
    make: Arc<MakeClient>,
    cache: Arc<Mutex<HashMap<String, aws_sdk_ec2::Client>>>,
}

impl Ec2Clients {
    pub fn from_config(config: &SdkConfig) -> Self {
        let config = config.clone();
        Self::from_fn(move |region| {
            let conf = aws_sdk_ec2::config::Builder::from(&config)
                .region(Region::new(region.to_string()))
                .build();
            aws_sdk_ec2::Client::from_conf(conf)
        })
    }

    /// For tests: `make` returns the (mocked) client for a region.
    pub fn from_fn(make: impl Fn(&str) -> aws_sdk_ec2::Client + Send + Sync + 'static) -> Self {
        Ec2Clients {
            make: Arc::new(make),
            cache: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub fn get(&self, region: &str) -> aws_sdk_ec2::Client {
        // A poisoned lock only means another thread panicked mid-insert; the map is still usable.
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry(region.to_string())
            .or_insert_with(|| (self.make)(region))
            .clone()
    }
}

/// SSM clients per region (publish writes parameters in every region).
#[derive(Clone)]
pub struct SsmClients {
    make: Arc<dyn Fn(&str) -> aws_sdk_ssm::Client + Send + Sync>,
    cache: Arc<Mutex<HashMap<String, aws_sdk_ssm::Client>>>,
}

impl SsmClients {
    pub fn from_config(config: &SdkConfig) -> Self {
        let config = config.clone();
        Self::from_fn(move |region| {
            let conf = aws_sdk_ssm::config::Builder::from(&config)
                .region(Region::new(region.to_string()))
                .build();
            aws_sdk_ssm::Client::from_conf(conf)
        })
    }

    pub fn from_fn(make: impl Fn(&str) -> aws_sdk_ssm::Client + Send + Sync + 'static) -> Self {
        SsmClients {
            make: Arc::new(make),
            cache: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub fn get(&self, region: &str) -> aws_sdk_ssm::Client {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry(region.to_string())
            .or_insert_with(|| (self.make)(region))
            .clone()
    }
}

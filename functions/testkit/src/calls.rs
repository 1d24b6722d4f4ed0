//! Counts the operations clients send, so a test can say "called nothing" whatever the rules.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use aws_sdk_ec2::config::interceptors::BeforeSerializationInterceptorContextRef;
use aws_sdk_ec2::config::{ConfigBag, Intercept};
use aws_smithy_mocks::Rule;

/// A shared count of operations (not attempts) sent by every client built with it.
#[derive(Clone, Debug, Default)]
pub struct Calls(Arc<AtomicUsize>);

impl Calls {
    pub fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }

    /// A mocked EC2 client answering from `rules`, audited and counted.
    pub fn ec2(&self, rules: &[&Rule]) -> aws_sdk_ec2::Client {
        ami_core::testing::ec2_with(rules, self.clone())
    }

    /// Step clients answering from `ec2` and `ssm` in any region, counted.
    pub fn clients(&self, ec2: &[&Rule], ssm: &[&Rule]) -> ami_core::step::Clients {
        let (ec2, ssm) = (self.ec2(ec2), self.ssm(ssm));
        ami_core::step::Clients {
            ec2: ami_core::aws::clients::Ec2Clients::from_fn(move |_| ec2.clone()),
            ssm: ami_core::aws::clients::SsmClients::from_fn(move |_| ssm.clone()),
        }
    }

    /// Instance step clients ([`crate::instance_clients`]) answering from `ec2` and `ssm`, counted.
    pub fn instance_clients(&self, ec2: &[&Rule], ssm: &[&Rule]) -> ami_core::step::InstanceClients {
        let channel = ami_core::aws::runcommand::Channel {
            ssm: self.ssm(ssm),
            ..crate::channel(&[])
        };
        ami_core::step::InstanceClients {
            ec2: self.ec2(ec2),
            channel,
        }
    }

    /// A mocked SSM client answering from `rules`, counted.
    pub fn ssm(&self, rules: &[&Rule]) -> aws_sdk_ssm::Client {
        ami_core::testing::ssm_with(rules, self.clone())
    }
}

impl Intercept for Calls {
    fn name(&self) -> &'static str {
        "ami-testkit call counter"
    }

    fn read_before_execution(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

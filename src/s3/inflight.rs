//! Uploads in flight: how many writes (PUT, UploadPart, copies, completions) may be between
//! admission and answer at once, gateway-wide and per tenant. One tenant's slow or stuck
//! uploads then cost every other tenant nothing but their share: beyond either bound a write is
//! refused at once with `503 SlowDown`, before its body is read or anything is reserved.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use s3s::{S3Error, S3ErrorCode};

/// The bounds (`[server]`).
#[derive(Debug, Clone, Copy)]
pub struct UploadLimits {
    /// Writes in flight on this gateway.
    pub in_flight: usize,
    /// Writes in flight of one tenant.
    pub tenant_in_flight: usize,
    /// Open multipart uploads of one tenant.
    pub open_per_tenant: usize,
}

impl Default for UploadLimits {
    fn default() -> Self {
        Self {
            in_flight: 1024,
            tenant_in_flight: 128,
            open_per_tenant: 10_000,
        }
    }
}

#[derive(Default)]
struct Counts {
    total: usize,
    per_tenant: HashMap<String, usize>,
}

pub(crate) struct InFlight {
    limits: UploadLimits,
    counts: Mutex<Counts>,
}

/// One admitted write; its place is given back when dropped (answered, failed or cancelled).
pub(crate) struct Ticket {
    owner: Arc<InFlight>,
    tenant: String,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut c = self.owner.counts.lock().unwrap_or_else(|e| e.into_inner());
        c.total -= 1;
        if let Some(n) = c.per_tenant.get_mut(&self.tenant) {
            *n -= 1;
            if *n == 0 {
                c.per_tenant.remove(&self.tenant);
            }
        }
    }
}

fn slow_down(msg: String) -> S3Error {
    let mut e = S3Error::with_message(S3ErrorCode::SlowDown, msg);
    e.set_status_code(http::StatusCode::SERVICE_UNAVAILABLE);
    e
}

impl InFlight {
    pub(crate) fn new(limits: UploadLimits) -> Arc<Self> {
        Arc::new(Self {
            limits,
            counts: Mutex::default(),
        })
    }

    pub(crate) fn limits(&self) -> &UploadLimits {
        &self.limits
    }

    pub(crate) fn enter(self: &Arc<Self>, tenant: &str) -> Result<Ticket, S3Error> {
        let mut c = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let mine = c.per_tenant.get(tenant).copied().unwrap_or(0);
        if mine >= self.limits.tenant_in_flight {
            return Err(slow_down(format!(
                "Your account has {mine} uploads in progress, the most allowed at once. Please retry after some of them finish."
            )));
        }
        if c.total >= self.limits.in_flight {
            return Err(slow_down(
                "The gateway has as many uploads in progress as it allows. Please retry later."
                    .into(),
            ));
        }
        c.total += 1;
        *c.per_tenant.entry(tenant.to_string()).or_default() += 1;
        Ok(Ticket {
            owner: self.clone(),
            tenant: tenant.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_per_tenant_and_in_all_and_given_back_on_drop() {
        let f = InFlight::new(UploadLimits {
            in_flight: 3,
            tenant_in_flight: 2,
            open_per_tenant: 1,
        });
        let a1 = f.enter("a").unwrap();
        let _a2 = f.enter("a").unwrap();
        let e = f.enter("a").err().unwrap();
        assert_eq!(e.code(), &S3ErrorCode::SlowDown);
        assert_eq!(e.status_code(), Some(http::StatusCode::SERVICE_UNAVAILABLE));
        let _b1 = f.enter("b").unwrap();
        assert!(f.enter("b").is_err(), "the gateway-wide bound");
        drop(a1);
        assert!(f.enter("b").is_ok());
    }
}

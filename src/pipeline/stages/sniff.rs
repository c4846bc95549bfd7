//! Type sniffing: the type is detected from the first bytes and judged against the bucket's
//! policy before anything is stored (whole objects only; a multipart object is judged at
//! completion, on its first part's bytes).

use async_trait::async_trait;

use crate::pipeline::PipelineError;
use crate::pipeline::policy;
use crate::pipeline::stage::{Found, Stage, Write, Written};

#[derive(Default)]
pub struct Sniff {
    detected: Option<String>,
}

#[async_trait]
impl Stage for Sniff {
    fn head_len(&self) -> usize {
        policy::SNIFF_LEN
    }

    fn head(&mut self, first: &[u8], w: &Write<'_>) -> Result<(), PipelineError> {
        let d = policy::detect(first);
        w.policy.check_type(&d, w.content_type, &w.target.key)?;
        self.detected = Some(d);
        Ok(())
    }

    async fn finish(
        &mut self,
        _w: &Write<'_>,
        _blob: &Written<'_>,
    ) -> Result<Found, PipelineError> {
        Ok(Found {
            detected: self.detected.take(),
            ..Default::default()
        })
    }
}

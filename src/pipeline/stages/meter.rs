//! The meter of a body whose length nobody declared (a chunked stream without
//! `Content-Length`): what a declared length decides before the first byte — the size limits
//! and the quota reservation — it decides chunk by chunk, before the backend gets the chunk.
//! A stream that crosses a limit ends there, and nothing of it becomes visible.

use async_trait::async_trait;
use bytes::Bytes;

use crate::pipeline::quota::Room;
use crate::pipeline::stage::{Found, Stage, Write, Written};
use crate::pipeline::{MAX_OBJECT_SIZE, PipelineError};

pub struct Meter {
    room: Room,
    seen: u64,
    /// The policy's size limit (from `open`).
    max: u64,
}

impl Meter {
    pub fn new(room: Room) -> Self {
        Self {
            room,
            seen: 0,
            max: MAX_OBJECT_SIZE,
        }
    }
}

#[async_trait]
impl Stage for Meter {
    async fn open(&mut self, w: &Write<'_>) -> Result<(), PipelineError> {
        self.max = w.policy.max_object_size;
        Ok(())
    }

    async fn chunk(&mut self, bytes: &Bytes) -> Result<(), PipelineError> {
        self.seen += bytes.len() as u64;
        if self.seen > MAX_OBJECT_SIZE {
            return Err(PipelineError::TooLarge);
        }
        if self.seen > self.max {
            return Err(crate::pipeline::policy::PolicyError::TooLarge { limit: self.max }.into());
        }
        self.room.grow_to(self.seen).await?;
        Ok(())
    }

    async fn finish(
        &mut self,
        _w: &Write<'_>,
        _blob: &Written<'_>,
    ) -> Result<Found, PipelineError> {
        Ok(Found::default())
    }
}

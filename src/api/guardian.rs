//! `runwarden.v1.GuardianService`: the guardian's operations and its live status stream.

use std::{pin::Pin, sync::Arc, time::Duration};

use futures::Stream;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::observe;
use crate::{
    domain::{guardian::StreamState, page_token::WorkerCursor},
    error::Error,
    guardian::Guardian,
    proto::v1::{
        CloseStreamRequest, GetGuardianStatusRequest, GuardianStatus, HealthEvent, HeartbeatBatchRequest,
        HeartbeatBatchResponse, HeartbeatRequest, HeartbeatResponse, ListStreamsRequest, ListStreamsResponse,
        OpenStreamRequest, RefusedHeartbeat, StreamState as PbState, TrackedStream, WatchHealthRequest,
        guardian_service_server::GuardianService, health_event,
    },
    store::ingest::Ingest,
};

#[derive(Clone)]
pub struct GuardianApi {
    guardian: Arc<Guardian>,
    ingest: Ingest,
}

/// Per-watcher buffer of WatchHealth events not yet sent.
const WATCH_HEALTH_BUFFER: usize = 256;

/// A live response stream.
pub type LiveStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// Registers a server-side watch as a tracked stream, heartbeats it while the client is
/// connected, and closes it when the client goes away or, when the server stops, ends the watch
/// with UNAVAILABLE (reconnect, to another replica or to this one restarted) and closes it then.
pub(crate) async fn track_watch<T: Send + 'static>(
    guardian: Arc<Guardian>,
    stream_type: &str,
    owner: String,
    sender: mpsc::Sender<Result<T, Status>>,
) -> Result<(), Error> {
    let opened =
        guardian.open(OpenStreamRequest { stream_type: stream_type.to_owned(), owner, ..Default::default() }).await?;
    let every =
        (guardian.config().stale_after / 3).to_std().unwrap_or(Duration::from_secs(10)).max(Duration::from_millis(100));
    let tracker = guardian.clone();
    tracker.spawn_watch(async move {
        let mut beat = tokio::time::interval(every);
        let reason = loop {
            tokio::select! {
                () = sender.closed() => break "client disconnected",
                () = guardian.stopping() => {
                    // The watch's response ends with this status; the task forwarding events
                    // stops at its next send.
                    let _ = sender.try_send(Err(Status::unavailable("the server is shutting down; reconnect")));
                    break "server shutting down";
                }
                _ = beat.tick() => {
                    if let Err(e) = guardian.heartbeat(&opened.stream_id).await {
                        tracing::debug!(error = %e, stream = %opened.stream_id, "watch heartbeat refused");
                    }
                }
            }
        };
        if let Err(e) = guardian.close(&opened.stream_id, reason).await {
            tracing::warn!(error = %e, stream = %opened.stream_id, "cannot close watch stream");
        }
    });
    Ok(())
}

impl GuardianApi {
    pub fn new(guardian: Arc<Guardian>, ingest: Ingest) -> Self {
        GuardianApi { guardian, ingest }
    }

    pub async fn open_stream(&self, request: OpenStreamRequest) -> Result<TrackedStream, Error> {
        observe("OpenStream", self.guardian.open(request)).await
    }

    pub async fn heartbeat(&self, request: HeartbeatRequest) -> Result<HeartbeatResponse, Error> {
        observe("Heartbeat", async {
            let stale_at = self.guardian.heartbeat(&request.stream_id).await?;
            Ok(HeartbeatResponse { stale_at: Some(crate::domain::validation::to_timestamp(stale_at)) })
        })
        .await
    }

    pub async fn heartbeat_batch(&self, request: HeartbeatBatchRequest) -> Result<HeartbeatBatchResponse, Error> {
        observe("HeartbeatBatch", async {
            let batch = self.guardian.heartbeat_batch(&request.stream_ids).await?;
            Ok(HeartbeatBatchResponse {
                accepted: batch.accepted as i64,
                refused: batch
                    .refused
                    .into_iter()
                    .map(|r| RefusedHeartbeat {
                        index: r.index as i64,
                        reason: r.refusal.as_str().to_owned(),
                        stream_id: r.stream_id,
                    })
                    .collect(),
                stale_at: Some(crate::domain::validation::to_timestamp(batch.stale_at)),
            })
        })
        .await
    }

    pub async fn close_stream(&self, request: CloseStreamRequest) -> Result<TrackedStream, Error> {
        observe("CloseStream", self.guardian.close(&request.stream_id, &request.reason)).await
    }

    pub async fn list_streams(&self, request: ListStreamsRequest) -> Result<ListStreamsResponse, Error> {
        observe("ListStreams", async {
            let limit = match request.limit {
                0 => 100,
                1..=1000 => request.limit as u64,
                n => return Err(Error::invalid("limit", format!("must be between 1 and 1000 (0 means 100), got {n}"))),
            };
            let state = match PbState::try_from(request.state) {
                Ok(PbState::Unspecified) => None,
                Ok(PbState::Healthy) => Some(StreamState::Healthy),
                Ok(PbState::Stale) => Some(StreamState::Stale),
                Ok(PbState::Orphaned) => Some(StreamState::Orphaned),
                Ok(PbState::Closed) => Some(StreamState::Closed),
                Err(_) => return Err(Error::invalid("state", format!("unknown value {}", request.state))),
            };
            let after = match request.page_token.as_str() {
                "" => None,
                token => {
                    Some(WorkerCursor::decode(token).map_err(|why| Error::invalid("page_token", why))?.worker_name)
                }
            };
            let stream_type = (!request.stream_type.is_empty()).then_some(request.stream_type.as_str());
            let mut streams = self.guardian.list(state, stream_type, after.as_deref(), limit + 1).await?;
            let next_page_token = if streams.len() as u64 > limit {
                streams.truncate(limit as usize);
                streams.last().map(|s| WorkerCursor { worker_name: s.stream_id.clone() }.encode()).unwrap_or_default()
            } else {
                String::new()
            };
            Ok(ListStreamsResponse { streams, next_page_token })
        })
        .await
    }

    pub async fn get_guardian_status(&self) -> Result<GuardianStatus, Error> {
        observe("GetGuardianStatus", async { Ok(self.guardian.status()) }).await
    }

    /// The current status now, then every tick's, interleaved with worker health changes.
    pub async fn watch_health(&self, owner: String) -> Result<LiveStream<HealthEvent>, Error> {
        observe("WatchHealth", async {
            let (tx, rx) = mpsc::channel(WATCH_HEALTH_BUFFER);
            // Subscribe before registering the watch, so no change after the first message is missed.
            let mut updates = self.guardian.subscribe();
            let mut changes = self.ingest.subscribe_health();
            track_watch(self.guardian.clone(), "watch_health", owner, tx.clone()).await?;
            tokio::spawn(async move {
                let status = |s: GuardianStatus| HealthEvent { event: Some(health_event::Event::Guardian(s)) };
                let current = updates.borrow_and_update().clone();
                if tx.send(Ok(status(current))).await.is_err() {
                    return;
                }
                loop {
                    let event = tokio::select! {
                        changed = updates.changed() => match changed {
                            Ok(()) => status(updates.borrow_and_update().clone()),
                            Err(_) => return,
                        },
                        change = changes.recv() => match change {
                            Ok(change) => HealthEvent { event: Some(health_event::Event::WorkerHealth((*change).clone())) },
                            Err(broadcast::error::RecvError::Lagged(missed)) => {
                                let _ = tx.send(Err(Status::resource_exhausted(format!(
                                    "watcher fell behind by {missed} health changes; reconnect"
                                )))).await;
                                return;
                            }
                            Err(broadcast::error::RecvError::Closed) => return,
                        },
                    };
                    match tx.try_send(Ok(event)) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            let _ = tx
                                .send(Err(Status::resource_exhausted(format!(
                                    "watcher fell behind by more than {WATCH_HEALTH_BUFFER} events; reconnect"
                                ))))
                                .await;
                            return;
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => return,
                    }
                }
            });
            Ok(Box::pin(ReceiverStream::new(rx)) as LiveStream<HealthEvent>)
        })
        .await
    }
}

/// Who is watching, for the tracked stream's owner.
pub(crate) fn peer<T>(request: &Request<T>) -> String {
    request.remote_addr().map_or_else(|| "unknown".to_owned(), |a| a.to_string())
}

#[tonic::async_trait]
impl GuardianService for GuardianApi {
    async fn open_stream(&self, request: Request<OpenStreamRequest>) -> Result<Response<TrackedStream>, Status> {
        Ok(Response::new(GuardianApi::open_stream(self, request.into_inner()).await?))
    }

    async fn heartbeat(&self, request: Request<HeartbeatRequest>) -> Result<Response<HeartbeatResponse>, Status> {
        Ok(Response::new(GuardianApi::heartbeat(self, request.into_inner()).await?))
    }

    async fn heartbeat_batch(
        &self,
        request: Request<HeartbeatBatchRequest>,
    ) -> Result<Response<HeartbeatBatchResponse>, Status> {
        Ok(Response::new(GuardianApi::heartbeat_batch(self, request.into_inner()).await?))
    }

    async fn close_stream(&self, request: Request<CloseStreamRequest>) -> Result<Response<TrackedStream>, Status> {
        Ok(Response::new(GuardianApi::close_stream(self, request.into_inner()).await?))
    }

    async fn list_streams(
        &self,
        request: Request<ListStreamsRequest>,
    ) -> Result<Response<ListStreamsResponse>, Status> {
        Ok(Response::new(GuardianApi::list_streams(self, request.into_inner()).await?))
    }

    async fn get_guardian_status(
        &self,
        _request: Request<GetGuardianStatusRequest>,
    ) -> Result<Response<GuardianStatus>, Status> {
        Ok(Response::new(GuardianApi::get_guardian_status(self).await?))
    }

    type WatchHealthStream = LiveStream<HealthEvent>;

    async fn watch_health(
        &self,
        request: Request<WatchHealthRequest>,
    ) -> Result<Response<Self::WatchHealthStream>, Status> {
        let owner = peer(&request);
        Ok(Response::new(GuardianApi::watch_health(self, owner).await?))
    }
}

//! `runwarden.v1.QueryService`: reads what workers reported.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{
    Services,
    guardian::{LiveStream, peer, track_watch},
    observe,
};
use crate::{
    domain::{
        page_token::{ExecutionCursor, WorkerCursor},
        rollup::Rollup,
        schedule::{Expected, Schedule},
        validation::{check_worker_name_field, from_timestamp, to_timestamp},
    },
    error::Error,
    proto::v1::{
        DataQualitySummary, Execution, GetDataQualitySummaryRequest, GetExecutionRequest, GetSystemLearningRequest,
        GetWorkerLearningRequest, GetWorkerRequest, GetWorkerStatsRequest, ListAnomaliesRequest, ListAnomaliesResponse,
        ListExecutionsRequest, ListExecutionsResponse, ListWorkersRequest, ListWorkersResponse, Outcome, QualityLevel,
        SystemLearning, WatchExecutionsRequest, Worker, WorkerLearning, WorkerSchedule, WorkerStats,
        query_service_server::QueryService,
    },
    store::{
        anomalies,
        executions::{self, ExecutionFilter},
        from_micros,
        ingest::health_to_proto,
        to_micros,
        workers::{self, WorkerRow},
    },
};

pub const DEFAULT_EXECUTIONS_LIMIT: i32 = 20;
pub const MAX_EXECUTIONS_LIMIT: i32 = 500;
pub const DEFAULT_WORKERS_LIMIT: i32 = 100;
pub const MAX_WORKERS_LIMIT: i32 = 1000;

#[derive(Clone)]
pub struct QueryApi {
    services: Arc<Services>,
}

/// `limit` 0 means the default; negative or above `max` is refused.
fn page_limit(limit: i32, default: i32, max: i32) -> Result<u64, Error> {
    match limit {
        0 => Ok(default as u64),
        1.. if limit <= max => Ok(limit as u64),
        _ => Err(Error::invalid("limit", format!("must be between 1 and {max} (0 means {default}), got {limit}"))),
    }
}

/// A worker's row as the API shows it, with its health at `now`.
pub(crate) fn worker_to_proto(
    row: WorkerRow,
    last_24h: Option<&Rollup>,
    open_anomalies: i64,
    now: chrono::DateTime<chrono::Utc>,
) -> Worker {
    let judged = last_24h.map_or(0, |r| r.runs - r.skipped);
    let verdict = workers::verdict(&row, now);
    let labels = workers::labels(&row).into_iter().collect();
    Worker {
        health: health_to_proto(verdict.health.as_str()) as i32,
        schedule: verdict.schedule.as_ref().map(|s| {
            let mut shown = schedule_to_proto(s);
            // A declared cron is shown as the operator wrote it.
            if let (false, Some(text)) = (s.inferred, &row.schedule_cron) {
                shown.cron.clone_from(text);
            }
            shown
        }),
        paused: row.paused,
        next_deadline: verdict.next_deadline.map(to_timestamp),
        owner: row.owner,
        description: row.description,
        labels,
        open_anomalies,
        last_run_started: row.last_run_at_us.map(|us| to_timestamp(from_micros(us))),
        worker_name: row.worker_name,
        worker_type: row.worker_type,
        first_seen: Some(to_timestamp(from_micros(row.first_seen_us))),
        last_seen: Some(to_timestamp(from_micros(row.last_seen_us))),
        last_outcome: row.last_outcome,
        run_count: row.run_count,
        last_overall_score: row.last_overall_score,
        last_quality_level: row.last_quality_level,
        success_rate_24h: last_24h.filter(|_| judged > 0).map(Rollup::success_rate),
        runs_24h: last_24h.map_or(0, |r| r.runs),
    }
}

/// A schedule as the API shows it.
pub(crate) fn schedule_to_proto(schedule: &Schedule) -> WorkerSchedule {
    let (interval_seconds, cron) = match &schedule.expected {
        Expected::Every(interval) => (interval.num_seconds(), String::new()),
        Expected::Cron(cron) => (0, cron.to_string()),
    };
    WorkerSchedule { interval_seconds, cron, grace_seconds: schedule.grace.num_seconds(), inferred: schedule.inferred }
}

impl QueryApi {
    pub fn new(services: Arc<Services>) -> Self {
        QueryApi { services }
    }

    pub(crate) fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.services.clock.now()
    }

    pub(crate) fn reader(&self) -> &sea_orm::DatabaseConnection {
        self.services.store.reader()
    }

    pub(crate) async fn worker_by_name(&self, field: &str, name: &str) -> Result<WorkerRow, Error> {
        check_worker_name_field(field, name).map_err(|v| Error::InvalidArgument(vec![v]))?;
        workers::find_by_name(self.services.store.reader(), name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("worker {name:?} not found")))
    }

    pub async fn list_workers(&self, request: ListWorkersRequest) -> Result<ListWorkersResponse, Error> {
        observe("ListWorkers", async {
            let limit = page_limit(request.limit, DEFAULT_WORKERS_LIMIT, MAX_WORKERS_LIMIT)?;
            let cursor = match request.page_token.as_str() {
                "" => None,
                token => Some(WorkerCursor::decode(token).map_err(|why| Error::invalid("page_token", why))?),
            };
            let mut rows =
                workers::list(self.services.store.reader(), cursor.as_ref().map(|c| c.worker_name.as_str()), limit + 1)
                    .await?;
            let next_page_token = if rows.len() as u64 > limit {
                rows.truncate(limit as usize);
                rows.last().map(|r| WorkerCursor { worker_name: r.worker_name.clone() }.encode()).unwrap_or_default()
            } else {
                String::new()
            };
            let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
            let health = self.health_24h(&ids).await?;
            let open = anomalies::open_counts(self.reader(), &ids).await?;
            let now = self.now();
            let workers = rows
                .into_iter()
                .map(|row| {
                    let last_24h = health.get(&row.id);
                    let open = open.get(&row.id).copied().unwrap_or(0);
                    worker_to_proto(row, last_24h, open, now)
                })
                .collect();
            Ok(ListWorkersResponse { workers, next_page_token })
        })
        .await
    }

    pub async fn get_worker(&self, request: GetWorkerRequest) -> Result<Worker, Error> {
        observe("GetWorker", async {
            let row = self.worker_by_name("worker_name", &request.worker_name).await?;
            let health = self.health_24h(&[row.id]).await?;
            let last_24h = health.get(&row.id);
            let open = anomalies::open_counts(self.reader(), &[row.id]).await?.get(&row.id).copied().unwrap_or(0);
            Ok(worker_to_proto(row, last_24h, open, self.now()))
        })
        .await
    }

    pub async fn list_executions(&self, request: ListExecutionsRequest) -> Result<ListExecutionsResponse, Error> {
        observe("ListExecutions", async {
            let limit = page_limit(request.limit, DEFAULT_EXECUTIONS_LIMIT, MAX_EXECUTIONS_LIMIT)?;
            let cursor = match request.page_token.as_str() {
                "" => None,
                token => Some(ExecutionCursor::decode(token).map_err(|why| Error::invalid("page_token", why))?),
            };
            let outcome = match Outcome::try_from(request.outcome) {
                Ok(Outcome::Unspecified) => None,
                Ok(outcome) => Some(outcome as i32),
                Err(_) => return Err(Error::invalid("outcome", format!("unknown value {}", request.outcome))),
            };
            let bound = |field: &str, ts: &Option<pbjson_types::Timestamp>| -> Result<Option<i64>, Error> {
                ts.as_ref()
                    .map(|ts| from_timestamp(ts).map(to_micros).map_err(|why| Error::invalid(field, why)))
                    .transpose()
            };
            let since_us = bound("since", &request.since)?;
            let until_us = bound("until", &request.until)?;
            let worker_id = match request.worker_name.as_str() {
                "" => None,
                name => Some(self.worker_by_name("worker_name", name).await?.id),
            };
            let filter = ExecutionFilter { worker_id, outcome, since_us, until_us };
            let mut rows = executions::list(self.services.store.reader(), &filter, cursor, limit + 1).await?;
            let next_page_token = if rows.len() as u64 > limit {
                rows.truncate(limit as usize);
                rows.last()
                    .map(|r| ExecutionCursor { started_at_us: r.started_at_us, id: r.id }.encode())
                    .unwrap_or_default()
            } else {
                String::new()
            };
            let executions =
                rows.iter().map(|row| row.to_proto().map_err(Error::internal)).collect::<Result<Vec<_>, _>>()?;
            Ok(ListExecutionsResponse { executions, next_page_token })
        })
        .await
    }

    pub async fn get_execution(&self, request: GetExecutionRequest) -> Result<Execution, Error> {
        observe("GetExecution", async {
            let id = uuid::Uuid::try_parse(&request.execution_id)
                .map_err(|_| Error::invalid("execution_id", "must be a UUID"))?
                .hyphenated()
                .to_string();
            let row = executions::find_by_execution_id(self.services.store.reader(), &id)
                .await?
                .ok_or_else(|| Error::NotFound(format!("execution {id} not found")))?;
            row.to_proto().map_err(Error::internal)
        })
        .await
    }
}

/// Per-watcher buffer of executions not yet sent.
const WATCH_BUFFER: usize = 256;

impl QueryApi {
    /// Each stored execution that passes the filter, as it is committed.
    pub async fn watch_executions(
        &self,
        request: WatchExecutionsRequest,
        owner: String,
    ) -> Result<LiveStream<Execution>, Error> {
        observe("WatchExecutions", async {
            let worker = match request.worker_name.as_str() {
                "" => None,
                name => {
                    check_worker_name_field("worker_name", name).map_err(|v| Error::InvalidArgument(vec![v]))?;
                    Some(name.to_owned())
                }
            };
            let min_level = match QualityLevel::try_from(request.min_level) {
                Ok(QualityLevel::Unspecified) => None,
                Ok(level) => Some(level as i32),
                Err(_) => return Err(Error::invalid("min_level", format!("unknown value {}", request.min_level))),
            };
            let mut events = self.services.ingest.subscribe();
            let (tx, rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
            track_watch(self.services.guardian.clone(), "watch_executions", owner, tx.clone()).await?;
            tokio::spawn(async move {
                loop {
                    let execution = match events.recv().await {
                        Ok(execution) => execution,
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                            let _ = tx.try_send(Err(Status::resource_exhausted(format!(
                                "watcher fell behind by {missed} executions; reconnect"
                            ))));
                            return;
                        }
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    };
                    let report = execution.report.as_ref();
                    if worker.as_deref().is_some_and(|w| report.is_none_or(|r| r.worker_name != w)) {
                        continue;
                    }
                    if min_level.is_some_and(|min| execution.quality_level < min) {
                        continue;
                    }
                    match tx.try_send(Ok((*execution).clone())) {
                        Ok(()) => {}
                        Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                            // The client reads slower than executions arrive: tell it, then stop.
                            let _ = tx
                                .send(Err(Status::resource_exhausted(format!(
                                    "watcher fell behind by more than {WATCH_BUFFER} executions; reconnect"
                                ))))
                                .await;
                            return;
                        }
                        Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return,
                    }
                }
            });
            Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)) as LiveStream<Execution>)
        })
        .await
    }
}

#[tonic::async_trait]
impl QueryService for QueryApi {
    type WatchExecutionsStream = LiveStream<Execution>;

    async fn list_anomalies(
        &self,
        request: Request<ListAnomaliesRequest>,
    ) -> Result<Response<ListAnomaliesResponse>, Status> {
        Ok(Response::new(QueryApi::list_anomalies(self, request.into_inner()).await?))
    }

    async fn watch_executions(
        &self,
        request: Request<WatchExecutionsRequest>,
    ) -> Result<Response<Self::WatchExecutionsStream>, Status> {
        let owner = peer(&request);
        Ok(Response::new(QueryApi::watch_executions(self, request.into_inner(), owner).await?))
    }

    async fn list_workers(
        &self,
        request: Request<ListWorkersRequest>,
    ) -> Result<Response<ListWorkersResponse>, Status> {
        Ok(Response::new(QueryApi::list_workers(self, request.into_inner()).await?))
    }

    async fn get_worker(&self, request: Request<GetWorkerRequest>) -> Result<Response<Worker>, Status> {
        Ok(Response::new(QueryApi::get_worker(self, request.into_inner()).await?))
    }

    async fn list_executions(
        &self,
        request: Request<ListExecutionsRequest>,
    ) -> Result<Response<ListExecutionsResponse>, Status> {
        Ok(Response::new(QueryApi::list_executions(self, request.into_inner()).await?))
    }

    async fn get_execution(&self, request: Request<GetExecutionRequest>) -> Result<Response<Execution>, Status> {
        Ok(Response::new(QueryApi::get_execution(self, request.into_inner()).await?))
    }

    async fn get_worker_stats(&self, request: Request<GetWorkerStatsRequest>) -> Result<Response<WorkerStats>, Status> {
        Ok(Response::new(QueryApi::get_worker_stats(self, request.into_inner()).await?))
    }

    async fn get_worker_learning(
        &self,
        request: Request<GetWorkerLearningRequest>,
    ) -> Result<Response<WorkerLearning>, Status> {
        Ok(Response::new(QueryApi::get_worker_learning(self, request.into_inner()).await?))
    }

    async fn get_system_learning(
        &self,
        request: Request<GetSystemLearningRequest>,
    ) -> Result<Response<SystemLearning>, Status> {
        Ok(Response::new(QueryApi::get_system_learning(self, request.into_inner()).await?))
    }

    async fn list_alert_deliveries(
        &self,
        request: Request<crate::proto::v1::ListAlertDeliveriesRequest>,
    ) -> Result<Response<crate::proto::v1::ListAlertDeliveriesResponse>, Status> {
        Ok(Response::new(QueryApi::list_alert_deliveries(self, request.into_inner()).await?))
    }

    async fn get_data_quality_summary(
        &self,
        request: Request<GetDataQualitySummaryRequest>,
    ) -> Result<Response<DataQualitySummary>, Status> {
        Ok(Response::new(QueryApi::get_data_quality_summary(self, request.into_inner()).await?))
    }
}

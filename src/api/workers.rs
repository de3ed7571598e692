//! `runwarden.v1.WorkerService`: what an operator declares about a worker (schedule, grace, pause,
//! owner, labels), and deleting a worker with everything stored about it.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::{QueryApi, Services, observe};
use crate::{
    domain::{validation::check_worker_name_field, worker_settings},
    error::Error,
    proto::v1::{
        DeleteWorkerRequest, DeleteWorkerResponse, GetWorkerRequest, UpsertWorkerRequest, Worker,
        worker_service_server::WorkerService,
    },
    store::{ingest::health_change, workers},
};

#[derive(Clone)]
pub struct WorkerApi {
    services: Arc<Services>,
    query: QueryApi,
}

impl WorkerApi {
    pub fn new(services: Arc<Services>) -> Self {
        WorkerApi { query: QueryApi::new(services.clone()), services }
    }

    pub async fn upsert_worker(&self, request: UpsertWorkerRequest) -> Result<Worker, Error> {
        observe("UpsertWorker", async {
            let settings = worker_settings::validate(&request).map_err(Error::InvalidArgument)?;
            let now = self.services.clock.now();
            let store = &self.services.store;
            let txn = store.begin_write().await?;
            let (row, previous) = workers::upsert_settings(&txn, store.backend(), &settings, now).await?;
            let changes: Vec<_> = previous
                .filter(|p| *p != row.health)
                .map(|previous| health_change(&row.worker_name, &previous, &row.health, now))
                .into_iter()
                .collect();
            crate::store::notify::send(&txn, store.replica(), &[], &changes).await?;
            let events = crate::store::alerts::events_of(&[], &[], &changes, &Default::default());
            crate::store::alerts::record(&txn, &events, crate::store::to_micros(now)).await?;
            txn.commit().await?;
            tracing::info!(
                worker = %row.worker_name,
                interval_secs = ?row.schedule_interval_secs,
                cron = ?row.schedule_cron,
                grace_secs = ?row.schedule_grace_secs,
                paused = row.paused,
                "worker settings upserted"
            );
            self.services.ingest.publish_health(changes);
            self.query.get_worker(GetWorkerRequest { worker_name: row.worker_name }).await
        })
        .await
    }

    pub async fn delete_worker(&self, request: DeleteWorkerRequest) -> Result<DeleteWorkerResponse, Error> {
        observe("DeleteWorker", async {
            let name = request.worker_name;
            check_worker_name_field("worker_name", &name).map_err(|v| Error::InvalidArgument(vec![v]))?;
            let txn = self.services.store.begin_write().await?;
            let deleted = workers::delete(&txn, &name).await?;
            txn.commit().await?;
            let executions_deleted = deleted.ok_or_else(|| Error::NotFound(format!("worker {name:?} not found")))?;
            tracing::info!(worker = %name, executions_deleted, "worker deleted");
            Ok(DeleteWorkerResponse {
                worker_name: name,
                executions_deleted: i64::try_from(executions_deleted).unwrap_or(i64::MAX),
            })
        })
        .await
    }
}

#[tonic::async_trait]
impl WorkerService for WorkerApi {
    async fn upsert_worker(&self, request: Request<UpsertWorkerRequest>) -> Result<Response<Worker>, Status> {
        Ok(Response::new(WorkerApi::upsert_worker(self, request.into_inner()).await?))
    }

    async fn delete_worker(
        &self,
        request: Request<DeleteWorkerRequest>,
    ) -> Result<Response<DeleteWorkerResponse>, Status> {
        Ok(Response::new(WorkerApi::delete_worker(self, request.into_inner()).await?))
    }
}

//! `QueryService.ListAnomalies`: what detection found, with its evidence.

use std::collections::HashMap;

use super::{observe, query::QueryApi};
use crate::{
    domain::{page_token::AnomalyCursor, validation::to_timestamp},
    error::Error,
    proto::v1::{Anomaly, AnomalyEvidence, AnomalyKind, ListAnomaliesRequest, ListAnomaliesResponse, Severity},
    store::{
        anomalies::{self, AnomalyFilter, AnomalyRow},
        from_micros, to_micros, workers,
    },
};

fn to_proto(row: AnomalyRow, names: &HashMap<i64, String>) -> Anomaly {
    let evidence: serde_json::Value = serde_json::from_str(&row.evidence).unwrap_or_default();
    let number = |key: &str| evidence.get(key).and_then(serde_json::Value::as_f64);
    Anomaly {
        anomaly_id: row.id.to_string(),
        worker_name: names.get(&row.worker_id).cloned().unwrap_or_default(),
        kind: AnomalyKind::from_str_name(&format!("ANOMALY_KIND_{}", row.kind)).unwrap_or(AnomalyKind::Unspecified)
            as i32,
        severity: Severity::from_str_name(&format!("SEVERITY_{}", row.severity)).unwrap_or(Severity::Unspecified)
            as i32,
        evidence: Some(AnomalyEvidence {
            value: number("value").unwrap_or_default(),
            baseline_median: number("baseline_median"),
            mad: number("mad"),
            threshold: number("threshold").unwrap_or_default(),
            window: number("window").map_or(0, |w| w as u32),
            detail: evidence.get("detail").and_then(serde_json::Value::as_str).unwrap_or_default().to_owned(),
        }),
        opened_at: Some(to_timestamp(from_micros(row.opened_at_us))),
        resolved_at: row.resolved_at_us.map(|at| to_timestamp(from_micros(at))),
        execution_id: row.execution_id.unwrap_or_default(),
    }
}

impl QueryApi {
    pub async fn list_anomalies(&self, request: ListAnomaliesRequest) -> Result<ListAnomaliesResponse, Error> {
        observe("ListAnomalies", async {
            let limit = match request.limit {
                0 => 100,
                1..=1000 => request.limit as u64,
                n => return Err(Error::invalid("limit", format!("must be between 1 and 1000 (0 means 100), got {n}"))),
            };
            let before_id = match request.page_token.as_str() {
                "" => None,
                token => Some(AnomalyCursor::decode(token).map_err(|why| Error::invalid("page_token", why))?.id),
            };
            let kind = match AnomalyKind::try_from(request.kind) {
                Ok(AnomalyKind::Unspecified) => None,
                Ok(kind) => Some(kind.as_str_name().trim_start_matches("ANOMALY_KIND_").to_owned()),
                Err(_) => return Err(Error::invalid("kind", format!("unknown value {}", request.kind))),
            };
            let since_us = request
                .since
                .as_ref()
                .map(|ts| {
                    crate::domain::validation::from_timestamp(ts)
                        .map(to_micros)
                        .map_err(|why| Error::invalid("since", why))
                })
                .transpose()?;
            let worker_id = match request.worker_name.as_str() {
                "" => None,
                name => Some(self.worker_by_name("worker_name", name).await?.id),
            };
            let filter = AnomalyFilter { worker_id, kind, since_us, open_only: request.open_only };
            let mut rows = anomalies::list(self.reader(), &filter, before_id, limit + 1).await?;
            let next_page_token = if rows.len() as u64 > limit {
                rows.truncate(limit as usize);
                rows.last().map(|r| AnomalyCursor { id: r.id }.encode()).unwrap_or_default()
            } else {
                String::new()
            };
            let names = workers::names(self.reader()).await?;
            Ok(ListAnomaliesResponse {
                anomalies: rows.into_iter().map(|r| to_proto(r, &names)).collect(),
                next_page_token,
            })
        })
        .await
    }
}

impl QueryApi {
    /// Alert delivery attempts, newest first.
    pub async fn list_alert_deliveries(
        &self,
        request: crate::proto::v1::ListAlertDeliveriesRequest,
    ) -> Result<crate::proto::v1::ListAlertDeliveriesResponse, Error> {
        use crate::proto::v1::{AlertDelivery, ListAlertDeliveriesResponse};
        observe("ListAlertDeliveries", async {
            let limit = match request.limit {
                0 => 100,
                1..=1000 => request.limit as u64,
                n => return Err(Error::invalid("limit", format!("must be between 1 and 1000 (0 means 100), got {n}"))),
            };
            let channel = Some(request.channel.as_str()).filter(|c| !c.is_empty());
            let rows = crate::store::alerts::attempts(self.reader(), channel, limit).await?;
            let deliveries = rows
                .into_iter()
                .map(|(a, row)| {
                    let row = row.unwrap_or_default();
                    AlertDelivery {
                        channel: a.channel,
                        delivery_id: a.delivery_id,
                        attempt: a.attempt,
                        at: Some(crate::domain::validation::to_timestamp(crate::store::from_micros(a.at_us))),
                        ok: a.ok,
                        http_status: a.http_status.unwrap_or(0),
                        latency_ms: a.latency_ms,
                        error: a.error.unwrap_or_default(),
                        alert_key: row.alert_key,
                        worker_name: row.worker_name,
                        kind: row.kind,
                        severity: row.severity,
                        state: row.state,
                    }
                })
                .collect();
            Ok(ListAlertDeliveriesResponse { deliveries })
        })
        .await
    }
}

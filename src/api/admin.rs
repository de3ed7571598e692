//! `runwarden.v1.AdminService`: API tokens, managed remotely. The auth layer admits only admin
//! tokens here; the work is [`crate::auth::Auth`]'s.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::observe;
use crate::{
    auth::Auth,
    domain::alerting::Rule,
    domain::{
        access::{Scope, parse_lifetime},
        validation::to_timestamp,
    },
    error::Error,
    proto::v1::{
        AlertRule, ApiToken, CreateTokenRequest, CreateTokenResponse, DeleteAlertRuleRequest, DeleteAlertRuleResponse,
        ListAlertRulesRequest, ListAlertRulesResponse, ListTokensRequest, ListTokensResponse, RevokeTokenRequest,
        TokenScope, admin_service_server::AdminService,
    },
    store::{from_micros, tokens::TokenRow},
};

#[derive(Clone)]
pub struct AdminApi {
    auth: Arc<Auth>,
    alerts: Arc<crate::alerts::Alerts>,
}

impl AdminApi {
    pub fn new(auth: Arc<Auth>, alerts: Arc<crate::alerts::Alerts>) -> Self {
        AdminApi { auth, alerts }
    }

    pub async fn list_alert_rules(&self) -> Result<ListAlertRulesResponse, Error> {
        observe("ListAlertRules", async {
            let rules = self.alerts.list_rules().await?;
            Ok(ListAlertRulesResponse { rules: rules.into_iter().map(|(id, r)| rule_message(id, r)).collect() })
        })
        .await
    }

    pub async fn create_alert_rule(&self, request: AlertRule) -> Result<AlertRule, Error> {
        observe("CreateAlertRule", async {
            let optional = |s: String| Some(s).filter(|s| !s.trim().is_empty());
            let rule = Rule {
                channel: request.channel,
                min_severity: optional(request.min_severity),
                kinds: request.kinds,
                worker_prefix: optional(request.worker_prefix),
                quiet_hours: optional(request.quiet_hours),
                after_consecutive: Some(request.after_consecutive).filter(|n| *n > 1),
            };
            let id = self.alerts.add_rule(rule.clone()).await?;
            Ok(rule_message(Some(id), rule))
        })
        .await
    }

    pub async fn delete_alert_rule(&self, request: DeleteAlertRuleRequest) -> Result<DeleteAlertRuleResponse, Error> {
        observe("DeleteAlertRule", async {
            self.alerts.delete_rule(request.id).await?;
            Ok(DeleteAlertRuleResponse {})
        })
        .await
    }

    pub async fn create_token(&self, request: CreateTokenRequest) -> Result<CreateTokenResponse, Error> {
        observe("CreateToken", async {
            let scope = match TokenScope::try_from(request.scope) {
                Ok(TokenScope::ReportWrite) => Scope::ReportWrite,
                Ok(TokenScope::Read) => Scope::Read,
                Ok(TokenScope::Admin) => Scope::Admin,
                _ => return Err(Error::invalid("scope", "must be REPORT_WRITE, READ or ADMIN")),
            };
            let lifetime = match request.expires_in.trim() {
                "" => None,
                text => Some(parse_lifetime(text).map_err(|e| Error::invalid("expires_in", e))?),
            };
            let prefix = Some(request.worker_prefix).filter(|p| !p.is_empty());
            let (row, secret) = self.auth.create_token(&request.name, scope, prefix, lifetime).await?;
            Ok(CreateTokenResponse { token: Some(token_message(&row)), secret })
        })
        .await
    }

    pub async fn list_tokens(&self) -> Result<ListTokensResponse, Error> {
        observe("ListTokens", async {
            let rows = self.auth.list_tokens().await?;
            Ok(ListTokensResponse { tokens: rows.iter().map(token_message).collect() })
        })
        .await
    }

    pub async fn revoke_token(&self, request: RevokeTokenRequest) -> Result<ApiToken, Error> {
        observe("RevokeToken", async {
            if request.token.trim().is_empty() {
                return Err(Error::invalid("token", "must name a token by id or name"));
            }
            Ok(token_message(&self.auth.revoke_token(request.token.trim()).await?))
        })
        .await
    }
}

fn rule_message(id: Option<i64>, rule: Rule) -> AlertRule {
    AlertRule {
        id: id.unwrap_or(0),
        channel: rule.channel,
        min_severity: rule.min_severity.unwrap_or_default(),
        kinds: rule.kinds,
        worker_prefix: rule.worker_prefix.unwrap_or_default(),
        quiet_hours: rule.quiet_hours.unwrap_or_default(),
        after_consecutive: rule.after_consecutive.unwrap_or(1),
        source: if id.is_some() { "admin" } else { "config" }.to_owned(),
    }
}

/// A stored token as the contract shows it (never with its secret or hash).
pub fn token_message(row: &TokenRow) -> ApiToken {
    let scope = match row.scope.parse::<Scope>() {
        Ok(Scope::ReportWrite) => TokenScope::ReportWrite,
        Ok(Scope::Read) => TokenScope::Read,
        Ok(Scope::Admin) => TokenScope::Admin,
        Err(_) => TokenScope::Unspecified,
    };
    ApiToken {
        id: row.id.clone(),
        name: row.name.clone(),
        scope: scope as i32,
        worker_prefix: row.worker_prefix.clone().unwrap_or_default(),
        created_at: Some(to_timestamp(from_micros(row.created_at_us))),
        expires_at: row.expires_at_us.map(|us| to_timestamp(from_micros(us))),
        revoked_at: row.revoked_at_us.map(|us| to_timestamp(from_micros(us))),
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn create_token(
        &self,
        request: Request<CreateTokenRequest>,
    ) -> Result<Response<CreateTokenResponse>, Status> {
        Ok(Response::new(AdminApi::create_token(self, request.into_inner()).await?))
    }

    async fn list_tokens(&self, _: Request<ListTokensRequest>) -> Result<Response<ListTokensResponse>, Status> {
        Ok(Response::new(AdminApi::list_tokens(self).await?))
    }

    async fn revoke_token(&self, request: Request<RevokeTokenRequest>) -> Result<Response<ApiToken>, Status> {
        Ok(Response::new(AdminApi::revoke_token(self, request.into_inner()).await?))
    }

    async fn list_alert_rules(
        &self,
        _: Request<ListAlertRulesRequest>,
    ) -> Result<Response<ListAlertRulesResponse>, Status> {
        Ok(Response::new(AdminApi::list_alert_rules(self).await?))
    }

    async fn create_alert_rule(&self, request: Request<AlertRule>) -> Result<Response<AlertRule>, Status> {
        Ok(Response::new(AdminApi::create_alert_rule(self, request.into_inner()).await?))
    }

    async fn delete_alert_rule(
        &self,
        request: Request<DeleteAlertRuleRequest>,
    ) -> Result<Response<DeleteAlertRuleResponse>, Status> {
        Ok(Response::new(AdminApi::delete_alert_rule(self, request.into_inner()).await?))
    }
}

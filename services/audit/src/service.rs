//! The tonic `AuditService` implementation: the owner's task history and activity, the admin
//! query across users, and chain verification.

use sqlx::PgPool;
use taskmesh_platform::{
    auth::Caller,
    grpc::Violations,
    pages::{PageTokens, page_size},
};
use taskmesh_proto::{
    audit::v1::{self as pb, audit_service_server::AuditService},
    names::TaskName,
};
use tonic::{Request, Response, Status};

use crate::{
    entries::{self, EntryRow},
    error::AuditError,
    list::{self, Invalid},
};

/// Entries per page when the request says 0.
const DEFAULT_PAGE: i64 = 100;

/// The AuditService gRPC server state. Cheap to clone.
#[derive(Clone, Debug)]
pub struct AuditServiceImpl {
    pool: PgPool,
    tokens: PageTokens,
}

impl AuditServiceImpl {
    /// A service on `pool` (search_path = the `audit` schema), signing page tokens with
    /// `tokens`.
    pub fn new(pool: PgPool, tokens: PageTokens) -> Self {
        Self { pool, tokens }
    }

    fn paging<'a>(&'a self, user: &'a str, size: i64, token: &'a str) -> list::Paging<'a> {
        list::Paging {
            tokens: &self.tokens,
            size,
            token,
            user,
        }
    }
}

/// A List's outcome: its page, or the field violation that stopped it.
fn page(
    result: Result<(Vec<EntryRow>, String), Invalid>,
) -> Result<(Vec<pb::AuditEntry>, String), AuditError> {
    match result {
        Ok((rows, next)) => Ok((rows.iter().map(EntryRow::to_proto).collect(), next)),
        Err((field, description)) => {
            let mut v = Violations::new();
            v.add(field, description);
            Err(AuditError::Invalid(v))
        }
    }
}

#[tonic::async_trait]
impl AuditService for AuditServiceImpl {
    async fn list_task_history(
        &self,
        request: Request<pb::ListTaskHistoryRequest>,
    ) -> Result<Response<pb::ListTaskHistoryResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let req = request.into_inner();
        let mut v = Violations::new();
        let size = page_size(req.page_size, DEFAULT_PAGE, &mut v);
        // The canonical (lower-case) name, as events carry it.
        let task = match TaskName::parse(&req.task) {
            Ok(task) => task.to_string(),
            Err(e) => {
                v.add("task", e.to_string());
                return Err(v.into_status());
            }
        };
        v.check()?;
        let mut conn = self.pool.acquire().await.map_err(AuditError::from)?;
        let found = list::history(
            &mut conn,
            &caller.user,
            &task,
            self.paging(&caller.user, size, &req.page_token),
        )
        .await
        .map_err(AuditError::from)?;
        let (entries, next_page_token) = page(found)?;
        // Nothing about the task in the caller's log: not theirs, or no such task.
        if entries.is_empty()
            && !list::knows_task(&mut conn, &caller.user, &task)
                .await
                .map_err(AuditError::from)?
        {
            return Err(AuditError::NotFound(req.task).into());
        }
        Ok(Response::new(pb::ListTaskHistoryResponse {
            entries,
            next_page_token,
        }))
    }

    async fn list_activity(
        &self,
        request: Request<pb::ListActivityRequest>,
    ) -> Result<Response<pb::ListActivityResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let req = request.into_inner();
        let mut v = Violations::new();
        let size = page_size(req.page_size, DEFAULT_PAGE, &mut v);
        v.check()?;
        let mut conn = self.pool.acquire().await.map_err(AuditError::from)?;
        let found = list::activity(
            &mut conn,
            &caller.user,
            self.paging(&caller.user, size, &req.page_token),
        )
        .await
        .map_err(AuditError::from)?;
        let (entries, next_page_token) = page(found)?;
        Ok(Response::new(pb::ListActivityResponse {
            entries,
            next_page_token,
        }))
    }

    async fn list_audit_entries(
        &self,
        request: Request<pb::ListAuditEntriesRequest>,
    ) -> Result<Response<pb::ListAuditEntriesResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        if !caller.is_admin() {
            return Err(AuditError::PermissionDenied("ListAuditEntries").into());
        }
        let req = request.into_inner();
        let mut v = Violations::new();
        let size = page_size(req.page_size, DEFAULT_PAGE, &mut v);
        let desc = match req.order_by.trim() {
            "" | "event_time" | "event_time asc" => false,
            "event_time desc" => true,
            _ => {
                v.add("order_by", "must be `event_time` or `event_time desc`");
                false
            }
        };
        let filter = taskmesh_platform::filter::compile(&req.filter, list::FIELDS)
            .map_err(|e| v.add("filter", e.to_string()))
            .ok();
        let (Some(filter), true) = (filter, v.is_empty()) else {
            return Err(v.into_status());
        };
        let mut conn = self.pool.acquire().await.map_err(AuditError::from)?;
        let found = list::query(
            &mut conn,
            &req.filter,
            &filter,
            desc,
            self.paging(&caller.user, size, &req.page_token),
        )
        .await
        .map_err(AuditError::from)?;
        let (entries, next_page_token) = page(found)?;
        Ok(Response::new(pb::ListAuditEntriesResponse {
            entries,
            next_page_token,
        }))
    }

    async fn verify_chain(
        &self,
        request: Request<pb::VerifyChainRequest>,
    ) -> Result<Response<pb::VerifyChainResponse>, Status> {
        let caller = Caller::of(&request)?.clone();
        let user = match request.get_ref().user.as_str() {
            "" => caller.user.clone(),
            user if user == caller.user => caller.user.clone(),
            _ if !caller.is_admin() => {
                return Err(AuditError::PermissionDenied("VerifyChain of another user").into());
            }
            user => user.to_owned(),
        };
        let verified = entries::verify(&self.pool, &user)
            .await
            .map_err(AuditError::from)?;
        Ok(Response::new(pb::VerifyChainResponse {
            valid: verified.valid(),
            checked_count: verified.checked,
            first_invalid_entry: verified
                .first_invalid
                .map(|id| format!("auditEntries/{id}"))
                .unwrap_or_default(),
        }))
    }
}

//! Listings: reinstatements, and what the undo targets did.

use super::*;

pub(super) async fn reinstatements(
    State(st): State<Arc<ApiState>>,
    Query(q): Query<query::Since>,
) -> Result<Response, ApiError> {
    let since = q.at(st.clock.now())?;
    let rows = st.read(move |s| Ok(s.reinstatements(since)?)).await?;
    Ok(axum::Json(
        rows.iter()
            .map(report::reinstatement_json)
            .collect::<Vec<_>>(),
    )
    .into_response())
}

/// `GET /v1/undo`: what the undo targets did (or would do), newest first.
pub(super) async fn undo(
    State(st): State<Arc<ApiState>>,
    Query(q): Query<query::Undo>,
) -> Result<Response, ApiError> {
    use crate::store::{Consumers, DeliveryStatus};
    let (status, outcome) = match q.status.as_deref() {
        None => (None, None),
        Some("failed") => (Some(DeliveryStatus::Failed), None),
        Some("dry_run") => (None, Some(crate::undo::outcome::DRY_RUN)),
        Some("waiting") => (Some(DeliveryStatus::Pending), Some("waiting")),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "status: {other:?} is not failed, dry_run or waiting"
            )));
        }
    };
    let limit = match q.limit {
        None => PAGE,
        Some(n) if (1..=MAX_PAGE).contains(&n) => n,
        Some(n) => {
            return Err(ApiError::bad_request(format!(
                "limit: {n} is not between 1 and {MAX_PAGE}"
            )));
        }
    };
    let whose = Consumers::Undo;
    let rows = st
        .read(move |s| Ok(s.deliveries_with(whose, status, outcome, Some(limit))?))
        .await?;
    Ok(axum::Json(
        rows.into_iter()
            .map(|mut d| {
                d.target = whose.name(&d.target).to_string();
                report::delivery_json(&d)
            })
            .collect::<Vec<_>>(),
    )
    .into_response())
}

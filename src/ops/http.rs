//! The job's HTTP address: metrics and health for machines, the live page and the KPI API
//! for people, on one small blocking server on a thread of its own.
//!
//! | path | answer |
//! |---|---|
//! | `/metrics` | OpenMetrics text ([`crate::ops::metrics`]) |
//! | `/healthz`, `/readyz` | liveness, readiness |
//! | `/` | the live page ([`crate::ops::live`]) |
//! | `/api/v1/live` | what the page shows: recent closed minutes, provisional ones, health |
//! | `/api/v1/kpi?family=&from=&to=` | closed rows as JSON lines, as in the files ([`crate::ops::api`]) |
//! | `/api/v1/state` | what `state inspect --json` gives |
//! | `/api/v1/advise/grace` | per candidate grace: invoices it accepts, delay it adds ([`crate::ops::advise`]) |
//!
//! A request that fails is answered with its status and a message; a handler that panics
//! is answered 500 and the server goes on: nothing asked here can stop the job. Four
//! threads answer, so a slow client of the API does not hold up `/metrics` or `/readyz`.
//!
//! What is served: numbers, the KPI rows of the files and the store's description — no
//! record content (rejected records stay in the output folder). Keep the address on
//! 127.0.0.1 or behind a proxy that decides who may read the KPIs.

use crate::ops::advise::advise_grace;
use crate::ops::api::{Api, ApiError, KpiQuery};
use crate::ops::live::{LiveView, PAGE};
use crate::ops::metrics::{Metrics, MetricsError};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

/// What the server answers from.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub metrics: Arc<Metrics>,
    /// The live page and `/api/v1/live`, when the job publishes to it.
    pub live: Option<Arc<LiveView>>,
    /// `/api/v1/kpi` and `/api/v1/state`.
    pub api: Option<Arc<Api>>,
}

/// Serves `ends` on `addr` for the life of the process. Returns the bound address (port 0
/// picks a free one).
pub fn serve(addr: SocketAddr, ends: Endpoints) -> Result<SocketAddr, MetricsError> {
    let listener = TcpListener::bind(addr).map_err(|source| MetricsError::Bind { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| MetricsError::Bind { addr, source })?;
    let server =
        tiny_http::Server::from_listener(listener, None).map_err(|e| MetricsError::Server {
            addr: bound,
            message: e.to_string(),
        })?;
    // A few threads: a slow client or a large KPI answer on one must not hold up the
    // scrapes and probes on the others.
    let server = Arc::new(server);
    for i in 0..THREADS {
        let (server, ends) = (Arc::clone(&server), ends.clone());
        std::thread::Builder::new()
            .name(format!("http-{i}"))
            .spawn(move || {
                for req in server.incoming_requests() {
                    respond(req, &ends);
                }
            })
            .map_err(|e| MetricsError::Server {
                addr: bound,
                message: e.to_string(),
            })?;
    }
    Ok(bound)
}

/// Threads answering requests.
const THREADS: usize = 4;

/// One answer: status, content type, body.
type Answer = (u16, &'static str, Vec<u8>);

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

fn text(status: u16, body: impl Into<String>) -> Answer {
    (status, TEXT, body.into().into_bytes())
}

fn json(v: &impl serde::Serialize) -> Answer {
    match serde_json::to_vec(v) {
        Ok(b) => (200, JSON, b),
        Err(e) => text(500, format!("cannot encode the answer: {e}\n")),
    }
}

fn api_error(e: ApiError) -> Answer {
    text(e.status(), format!("{e}\n"))
}

/// The answer to a GET of `path` with `query` (after `?`, possibly empty).
pub fn route(ends: &Endpoints, path: &str, query: &str) -> Answer {
    match path {
        "/metrics" => (
            200,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ends.metrics.render().into_bytes(),
        ),
        "/healthz" => text(200, "ok\n"),
        "/readyz" => {
            let (s, b) = ends.metrics.readyz();
            text(s, b)
        }
        "/" => match &ends.live {
            Some(_) => (200, "text/html; charset=utf-8", PAGE.as_bytes().to_vec()),
            None => text(200, "retail-kpi: /metrics /healthz /readyz\n"),
        },
        "/api/v1/live" => match &ends.live {
            Some(live) => json(&live.answer(ends.metrics.health())),
            None => text(404, "the live view is off in this process\n"),
        },
        "/api/v1/advise/grace" => match &ends.live {
            Some(live) => {
                let (lateness, future) = ends.metrics.lateness();
                json(&advise_grace(&lateness, future, live.grace_seconds()))
            }
            None => text(404, "the live view is off in this process\n"),
        },
        "/api/v1/kpi" => match &ends.api {
            Some(api) => match KpiQuery::parse(query).and_then(|q| api.kpi(&q)) {
                Ok(rows) => (200, "application/x-ndjson", rows),
                Err(e) => api_error(e),
            },
            None => text(404, "the KPI API is off in this process\n"),
        },
        "/api/v1/state" => match &ends.api {
            Some(api) => match api.state() {
                Ok(v) => json(&v),
                Err(e) => api_error(e),
            },
            None => text(404, "the KPI API is off in this process\n"),
        },
        _ => text(
            404,
            "not found: try / (live page), /metrics, /readyz, /api/v1/live, /api/v1/kpi, /api/v1/state, /api/v1/advise/grace\n",
        ),
    }
}

fn respond(req: tiny_http::Request, ends: &Endpoints) {
    let url = req.url().to_owned();
    let (path, query) = url.split_once('?').unwrap_or((&url, ""));
    let get = matches!(
        req.method(),
        tiny_http::Method::Get | tiny_http::Method::Head
    );
    let (status, content_type, body) = if !get {
        text(405, "only GET and HEAD\n")
    } else {
        // A bug behind one request must not end the server (and with it the page and the
        // metrics) for the life of the job.
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| route(ends, path, query)))
            .unwrap_or_else(|_| {
                tracing::error!(path, "the HTTP handler panicked; answered 500");
                text(500, "internal error; see the job's log\n")
            })
    };
    let header =
        tiny_http::Header::from_bytes("Content-Type", content_type).expect("a valid static header");
    let no_store =
        tiny_http::Header::from_bytes("Cache-Control", "no-store").expect("a valid static header");
    // Error messages quote the request: never let a browser read them as anything else.
    let nosniff = tiny_http::Header::from_bytes("X-Content-Type-Options", "nosniff")
        .expect("a valid static header");
    // A client that went away is its own problem; the job goes on.
    let _ = req.respond(
        tiny_http::Response::from_data(body)
            .with_status_code(status)
            .with_header(header)
            .with_header(no_store)
            .with_header(nosniff),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ends() -> Endpoints {
        Endpoints {
            metrics: Arc::new(Metrics::new(0)),
            live: Some(Arc::new(LiveView::new(
                std::time::Duration::from_secs(1),
                std::time::Duration::from_secs(60),
            ))),
            api: Some(Arc::new(Api::new("/nonexistent/state".into(), None))),
        }
    }

    #[test]
    fn routes_answer_with_status_and_message() {
        let e = ends();
        let (s, ct, body) = route(&e, "/", "");
        assert_eq!((s, ct), (200, "text/html; charset=utf-8"));
        assert!(String::from_utf8(body).unwrap().contains("<html"));
        let (s, _, body) = route(&e, "/api/v1/live", "");
        assert_eq!(s, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(v["closed"].as_array().unwrap().is_empty());
        assert_eq!(v["health"]["checkpoint_interval_seconds"], 1.0);
        assert_eq!(v["health"]["rejected"]["late"], 0);
        let (s, _, body) = route(&e, "/api/v1/kpi", "family=nope");
        assert_eq!(s, 400);
        assert!(String::from_utf8(body).unwrap().contains("time or country"));
        // No store there: a clear 503, not a crash.
        let (s, _, body) = route(
            &e,
            "/api/v1/kpi",
            "family=time&from=2020-09-18T10:00:00Z&to=2020-09-18T11:00:00Z",
        );
        assert_eq!(s, 503, "{}", String::from_utf8_lossy(&body));
        assert_eq!(route(&e, "/api/v1/state", "").0, 503);
        assert_eq!(route(&e, "/nope", "").0, 404);
        let (s, _, body) = route(&e, "/api/v1/advise/grace", "");
        assert_eq!(s, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["current_grace_seconds"], 60.0);
        assert_eq!(v["options"][5]["grace_seconds"], 60);
    }
}

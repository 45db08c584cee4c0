//! The Prometheus endpoint that cardlinkd (`[metrics] listen`) and
//! cardlink-display (`--metrics-listen`) serve: `GET /metrics` in the
//! Prometheus text exposition format (version 0.0.4, encoded by
//! `prometheus-client`), anything else `404`.
//!
//! What a process measures is its own (`daemon::metrics`, the display's
//! in `display`); this file is only the HTTP side, shared: hyper's HTTP/1
//! connections with a deadline for request headers and a bound on
//! connections, like the display's own server. The body is made at each
//! scrape by the process's render function, so gauges that mirror state
//! (reader states, clients) are read then, not kept in step.
//!
//! No metric carries personal data (no SSN, name, card number or PAN in a
//! name, a label or a value), which is why the endpoint has no
//! authentication: put it on loopback or on the address the scraper
//! reaches, and let the unit allow that address only (README, "Metrics").

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// The `Content-Type` of the exposition.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
/// Scrapes served at once; more wait to be accepted.
pub const MAX_CONNECTIONS: usize = 16;
/// A scraper that has not sent its request headers by then is dropped.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Makes the exposition text at each scrape.
pub type Render = Arc<dyn Fn() -> String + Send + Sync>;

/// `registry` in the Prometheus text format; an encoding failure (a
/// `fmt::Error`, which writing to a `String` does not raise) gives what
/// was written so far.
pub fn encode(registry: &prometheus_client::registry::Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::prometheus_text::encode(&mut out, registry).is_err() {
        tracing::warn!("metrics could not be encoded completely");
    }
    out
}

/// Registers `cardlink_build_info{version, sim} 1` on `registry`: the
/// release and whether this is a simulator build (`--features sim`).
pub fn register_build_info(registry: &mut prometheus_client::registry::Registry) {
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    let info = Family::<Vec<(String, String)>, Gauge>::default();
    info.get_or_create(&vec![
        ("version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
        (
            "sim".to_string(),
            if cfg!(feature = "sim") {
                "true"
            } else {
                "false"
            }
            .to_string(),
        ),
    ])
    .set(1);
    registry.register(
        "cardlink_build_info",
        "The release and whether the binary is a simulator build",
        info,
    );
}

/// Serves `render`'s text at `/metrics` on `listener` until `shutdown`.
pub async fn serve(listener: tokio::net::TcpListener, render: Render, shutdown: CancellationToken) {
    use hyper_util::rt::{TokioIo, TokioTimer};
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = tokio::select! {
            _ = shutdown.cancelled() => return,
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => return,
            },
        };
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return,
            a = listener.accept() => match a {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let render = render.clone();
        let stop = shutdown.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let render = render.clone();
                async move { Ok::<_, std::convert::Infallible>(answer(&req, &render)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
            }
            drop(slot);
        });
    }
}

type Body = axum::body::Body;

fn answer<B>(req: &hyper::Request<B>, render: &Render) -> hyper::Response<Body> {
    use hyper::{header, Method, StatusCode};
    let (status, ctype, body) = if req.uri().path() != "/metrics" {
        (
            StatusCode::NOT_FOUND,
            "text/plain; charset=utf-8",
            "only /metrics here\n".to_string(),
        )
    } else if req.method() != Method::GET && req.method() != Method::HEAD {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain; charset=utf-8",
            "GET /metrics\n".to_string(),
        )
    } else {
        (StatusCode::OK, CONTENT_TYPE, render())
    };
    let mut r = hyper::Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(ctype),
    );
    r
}

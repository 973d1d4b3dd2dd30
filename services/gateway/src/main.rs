//! The gateway: Slipway's sample Rust service, and the template of `cargo xtask new
//! --kind rust`. An HTTPS server (rustls) that answers `GET /health` and, when it has an
//! upstream (`UPSTREAM_URL`: the agent, in this project), forwards `/api/...` to it over
//! mTLS with its client certificate. `gateway healthcheck` is the image's HEALTHCHECK (the prod image has no
//! shell and no curl). SIGTERM or SIGINT drains in-flight requests and exits within 2 s.
//!
//! Configuration (environment):
//! - `GATEWAY_LISTEN` (`0.0.0.0:8443`);
//! - `UPSTREAM_URL` (`https://agent:9443`; unset: no upstream, `/api` answers 404);
//! - `CERTS_DIR` (`/certs`) holding `gateway.crt`/`gateway.key` (server) and, with an
//!   upstream, `gateway-client.crt`/`gateway-client.key` (mTLS client); each file can be
//!   named on its own with `SERVER_CERT`, `SERVER_KEY`, `CLIENT_CERT`, `CLIENT_KEY`;
//! - `ROOT_CA`: the project Root CA the upstream's certificate must chain to (the image
//!   sets the copy baked into it at build time).

mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// Largest request body forwarded upstream.
const MAX_BODY: usize = 1 << 20;
/// How long in-flight requests get after SIGTERM.
const DRAIN: Duration = Duration::from_millis(1500);

fn main() -> ExitCode {
    let arg = std::env::args().nth(1);
    let result = match arg.as_deref() {
        None | Some("serve") => serve(),
        Some("healthcheck") => healthcheck(),
        Some("-h" | "--help") => {
            println!(
                "usage: gateway [serve | healthcheck]\n  serve (default): the HTTPS gateway\n  healthcheck: exit 0 when /health answers"
            );
            Ok(())
        }
        Some(other) => Err(format!("unknown command `{other}`: use `serve` or `healthcheck`")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("gateway: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Log one event as one line: `gateway: key=value ...`.
fn log(event: &str, fields: &[(&str, String)]) {
    let mut line = format!("gateway: event={event}");
    for (k, v) in fields {
        line.push_str(&format!(" {k}={v}"));
    }
    println!("{line}");
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

/// Everything the server needs, loaded and checked before it listens.
struct Config {
    listen: SocketAddr,
    upstream: Option<Upstream>,
    server: Arc<rustls::ServerConfig>,
    /// `ENVIRONMENT` (local, dev or prod), from the target's environment file.
    environment: String,
}

fn config() -> Result<Config, String> {
    let listen: SocketAddr = env_or("GATEWAY_LISTEN", "0.0.0.0:8443")
        .parse()
        .map_err(|e| format!("GATEWAY_LISTEN is not an address:port ({e})"))?;
    let dir = env_or("CERTS_DIR", "/certs");
    let file = |key: &str, name: &str| env_or(key, &format!("{dir}/{name}"));
    let root_ca = std::env::var("ROOT_CA")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| format!("{dir}/rootCA.crt"));
    let server = tls::server_config(&file("SERVER_CERT", "gateway.crt"), &file("SERVER_KEY", "gateway.key"))?;
    let upstream = match std::env::var("UPSTREAM_URL").ok().filter(|v| !v.is_empty()) {
        None => None,
        Some(url) => {
            let (host, port) = authority(&url)?;
            let client = tls::client_config(
                &root_ca,
                Some((
                    &file("CLIENT_CERT", "gateway-client.crt"),
                    &file("CLIENT_KEY", "gateway-client.key"),
                )),
            )?;
            Some(Upstream {
                host,
                port,
                client: Arc::new(client),
            })
        }
    };
    Ok(Config {
        listen,
        upstream,
        server: Arc::new(server),
        environment: env_or("ENVIRONMENT", "unset"),
    })
}

/// The service this one forwards `/api` to, over mTLS.
struct Upstream {
    /// Also the name its certificate must carry.
    host: String,
    port: u16,
    client: Arc<rustls::ClientConfig>,
}

/// `https://host[:port][/...]` -> (host, port).
fn authority(url: &str) -> Result<(String, u16), String> {
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| format!("UPSTREAM_URL `{url}` must start with https://"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    match authority.rsplit_once(':') {
        Some((h, p)) => Ok((
            h.to_owned(),
            p.parse().map_err(|_| format!("UPSTREAM_URL `{url}` has a bad port"))?,
        )),
        None => Ok((authority.to_owned(), 443)),
    }
}

fn serve() -> Result<(), String> {
    let config = Arc::new(config()?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(run(config))
}

async fn run(config: Arc<Config>) -> Result<(), String> {
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let acceptor = tokio_rustls::TlsAcceptor::from(config.server.clone());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    log(
        "listening",
        &[
            ("addr", config.listen.to_string()),
            (
                "upstream",
                config
                    .upstream
                    .as_ref()
                    .map_or_else(|| "none".to_owned(), |u| format!("{}:{}", u.host, u.port)),
            ),
        ],
    );
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    loop {
        // The next connection, or None on SIGTERM or SIGINT (polled by hand: tokio's
        // `select!` would bring its proc-macro crates into the build).
        let next = std::future::poll_fn(|cx| {
            if term.poll_recv(cx).is_ready() || int.poll_recv(cx).is_ready() {
                return Poll::Ready(None);
            }
            listener.poll_accept(cx).map(Some)
        });
        let (tcp, peer) = match next.await {
            Some(Ok(pair)) => pair,
            Some(Err(err)) => {
                log("accept-error", &[("error", err.to_string())]);
                continue;
            }
            None => break,
        };
        let acceptor = acceptor.clone();
        let config = config.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(err)) => return log("tls-error", &[("peer", peer.to_string()), ("error", err.to_string())]),
                Err(_) => {
                    return log(
                        "tls-error",
                        &[("peer", peer.to_string()), ("error", "handshake timed out".into())],
                    );
                }
            };
            let service = hyper::service::service_fn(move |req| handle(req, config.clone()));
            let conn = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), service);
            if let Err(err) = watcher.watch(conn).await {
                log(
                    "connection-error",
                    &[("peer", peer.to_string()), ("error", err.to_string())],
                );
            }
        });
    }
    log("stopping", &[("drain_ms", DRAIN.as_millis().to_string())]);
    drop(listener);
    match tokio::time::timeout(DRAIN, graceful.shutdown()).await {
        Ok(()) => log("stopped", &[]),
        Err(_) => log(
            "stopped",
            &[("note", "in-flight requests cut at the drain limit".into())],
        ),
    }
    Ok(())
}

type Body = Full<Bytes>;

fn json(status: StatusCode, value: serde_json::Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(value.to_string())))
        .expect("a static response")
}

async fn handle(req: Request<Incoming>, config: Arc<Config>) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let response = match (method.clone(), path.as_str()) {
        (Method::GET, "/health") => health(&config).await,
        (_, p) if (p == "/api" || p.starts_with("/api/")) && config.upstream.is_some() => forward(req, &config).await,
        _ => json(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": format!("no route for {method} {path}")}),
        ),
    };
    log(
        "request",
        &[
            ("method", method.to_string()),
            ("path", path),
            ("status", response.status().as_u16().to_string()),
            ("ms", format!("{:.1}", started.elapsed().as_secs_f64() * 1000.0)),
        ],
    );
    Ok(response)
}

/// `/health`: this service, and its upstream's own `/health` when it has one (a failing
/// upstream makes it `degraded`, still 200: this service itself serves).
async fn health(config: &Config) -> Response<Body> {
    let Some(upstream) = &config.upstream else {
        return json(
            StatusCode::OK,
            serde_json::json!({"status": "ok", "service": "gateway", "environment": config.environment}),
        );
    };
    let (status, detail) = match call_upstream(upstream, Method::GET, "/health", None, Bytes::new()).await {
        Ok((status, _, _)) if status.is_success() => ("ok", "ok".to_owned()),
        Ok((status, _, _)) => ("degraded", format!("unhealthy: HTTP {}", status.as_u16())),
        Err(err) => ("degraded", format!("unreachable: {err}")),
    };
    json(
        StatusCode::OK,
        serde_json::json!({
            "status": status,
            "service": "gateway",
            "upstream": {"host": upstream.host, "status": detail},
            "environment": config.environment,
        }),
    )
}

/// Forward `/api/...` upstream: method, path and query, body, content type.
async fn forward(req: Request<Incoming>, config: &Config) -> Response<Body> {
    let method = req.method().clone();
    let path_and_query = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "/".into());
    let content_type = req.headers().get("content-type").cloned();
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => {
            return json(
                StatusCode::PAYLOAD_TOO_LARGE,
                serde_json::json!({"error": format!("the body is over {MAX_BODY} bytes")}),
            );
        }
    };
    let upstream = config.upstream.as_ref().expect("routed here only with an upstream");
    match call_upstream(upstream, method, &path_and_query, content_type, body).await {
        Ok((status, ctype, bytes)) => {
            let mut response = Response::builder().status(status);
            if let Some(ctype) = ctype {
                response = response.header("content-type", ctype);
            }
            response.body(Full::new(bytes)).expect("a forwarded response")
        }
        Err(err) => json(
            StatusCode::BAD_GATEWAY,
            serde_json::json!({"error": format!("{} unreachable: {err}", upstream.host)}),
        ),
    }
}

/// One HTTP/1 request over TLS to `host:port` (`host` is also the name the server's
/// certificate must carry): connect, handshake, send, read the whole answer.
async fn https(
    client: Arc<rustls::ClientConfig>,
    host: &str,
    port: u16,
    request: Request<Full<Bytes>>,
) -> Result<(StatusCode, Option<hyper::header::HeaderValue>, Bytes), String> {
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let name = rustls_pki_types::ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(client)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let response = sender.send_request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let ctype = response.headers().get("content-type").cloned();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, ctype, bytes))
}

/// One request upstream over mTLS (a new connection each time: simple, and the upstream
/// sees the client certificate on every call).
async fn call_upstream(
    upstream: &Upstream,
    method: Method,
    path_and_query: &str,
    content_type: Option<hyper::header::HeaderValue>,
    body: Bytes,
) -> Result<(StatusCode, Option<hyper::header::HeaderValue>, Bytes), String> {
    let mut request = Request::builder()
        .method(method)
        .uri(path_and_query)
        .header("host", format!("{}:{}", upstream.host, upstream.port));
    if let Some(ctype) = content_type {
        request = request.header("content-type", ctype);
    }
    let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
    let work = https(upstream.client.clone(), &upstream.host, upstream.port, request);
    tokio::time::timeout(Duration::from_secs(5), work)
        .await
        .map_err(|_| "timed out after 5 s".to_owned())?
}

/// `gateway healthcheck`: GET https://127.0.0.1:<port>/health, trusting the Root CA;
/// exit 0 when it answers 200 (ok or degraded: the gateway itself is serving).
fn healthcheck() -> Result<(), String> {
    let listen: SocketAddr = env_or("GATEWAY_LISTEN", "0.0.0.0:8443")
        .parse()
        .map_err(|e| format!("GATEWAY_LISTEN: {e}"))?;
    let dir = env_or("CERTS_DIR", "/certs");
    let root_ca = std::env::var("ROOT_CA")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| format!("{dir}/rootCA.crt"));
    let client = Arc::new(tls::client_config(&root_ca, None)?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let work = async {
            let request = Request::get("/health")
                .header("host", "127.0.0.1")
                .body(Full::new(Bytes::new()))
                .map_err(|e| e.to_string())?;
            let (status, _, body) = https(client, "127.0.0.1", listen.port(), request).await?;
            println!("{}", String::from_utf8_lossy(&body));
            if status == StatusCode::OK {
                Ok(())
            } else {
                Err(format!("/health answered {status}"))
            }
        };
        tokio::time::timeout(Duration::from_secs(3), work)
            .await
            .map_err(|_| "no answer within 3 s".to_owned())?
    })
}

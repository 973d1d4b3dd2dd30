//! The gateway: Slipway's sample Rust service. An HTTPS server (rustls) that answers
//! `GET /health` and forwards `/api/...` to the agent over mTLS with its client
//! certificate. `gateway healthcheck` is the image's HEALTHCHECK (the prod image has no
//! shell and no curl). SIGTERM or SIGINT drains in-flight requests and exits within 2 s.
//!
//! Configuration (environment):
//! - `GATEWAY_LISTEN` (`0.0.0.0:8443`), `AGENT_URL` (`https://agent:9443`);
//! - `CERTS_DIR` (`/certs`) holding `gateway.crt`/`gateway.key` (server) and
//!   `gateway-client.crt`/`gateway-client.key` (mTLS client); each file can be named on
//!   its own with `SERVER_CERT`, `SERVER_KEY`, `CLIENT_CERT`, `CLIENT_KEY`;
//! - `ROOT_CA`: the project Root CA the agent's certificate must chain to (the image
//!   sets the copy baked into it at build time).

mod tls;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// Largest request body forwarded to the agent.
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
    agent_host: String,
    agent_port: u16,
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
    /// `ENVIRONMENT` (local, dev or prod), from the target's environment file.
    environment: String,
}

fn config() -> Result<Config, String> {
    let listen: SocketAddr = env_or("GATEWAY_LISTEN", "0.0.0.0:8443")
        .parse()
        .map_err(|e| format!("GATEWAY_LISTEN is not an address:port ({e})"))?;
    let agent = env_or("AGENT_URL", "https://agent:9443");
    let rest = agent
        .strip_prefix("https://")
        .ok_or_else(|| format!("AGENT_URL `{agent}` must start with https://"))?;
    let authority = rest.split('/').next().unwrap_or(rest);
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h.to_owned(),
            p.parse().map_err(|_| format!("AGENT_URL `{agent}` has a bad port"))?,
        ),
        None => (authority.to_owned(), 443),
    };
    let dir = env_or("CERTS_DIR", "/certs");
    let file = |key: &str, name: &str| env_or(key, &format!("{dir}/{name}"));
    let root_ca = std::env::var("ROOT_CA")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| format!("{dir}/rootCA.crt"));
    let server = tls::server_config(&file("SERVER_CERT", "gateway.crt"), &file("SERVER_KEY", "gateway.key"))?;
    let client = tls::client_config(
        &root_ca,
        Some((
            &file("CLIENT_CERT", "gateway-client.crt"),
            &file("CLIENT_KEY", "gateway-client.key"),
        )),
    )?;
    Ok(Config {
        listen,
        agent_host: host,
        agent_port: port,
        server: Arc::new(server),
        client: Arc::new(client),
        environment: env_or("ENVIRONMENT", "unset"),
    })
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
            ("agent", format!("{}:{}", config.agent_host, config.agent_port)),
        ],
    );
    let mut term =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(|e| e.to_string())?;
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => { log("accept-error", &[("error", err.to_string())]); continue; }
            },
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
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
        (Method::GET, "/health") => {
            let agent = call_agent(&config, Method::GET, "/health", None, Bytes::new()).await;
            match agent {
                Ok((status, _, _)) if status.is_success() => json(
                    StatusCode::OK,
                    serde_json::json!({"status": "ok", "agent": "ok", "environment": config.environment}),
                ),
                Ok((status, _, _)) => json(
                    StatusCode::OK,
                    serde_json::json!({"status": "degraded", "agent": format!("unhealthy: HTTP {}", status.as_u16())}),
                ),
                Err(err) => json(
                    StatusCode::OK,
                    serde_json::json!({"status": "degraded", "agent": format!("unreachable: {err}")}),
                ),
            }
        }
        (_, p) if p == "/api" || p.starts_with("/api/") => forward(req, &config).await,
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

/// Forward `/api/...` to the agent: method, path and query, body, content type.
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
    match call_agent(config, method, &path_and_query, content_type, body).await {
        Ok((status, ctype, bytes)) => {
            let mut response = Response::builder().status(status);
            if let Some(ctype) = ctype {
                response = response.header("content-type", ctype);
            }
            response.body(Full::new(bytes)).expect("a forwarded response")
        }
        Err(err) => json(
            StatusCode::BAD_GATEWAY,
            serde_json::json!({"error": format!("agent unreachable: {err}")}),
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

/// One request to the agent over mTLS (a new connection each time: simple, and the agent
/// sees the client certificate on every call).
async fn call_agent(
    config: &Config,
    method: Method,
    path_and_query: &str,
    content_type: Option<hyper::header::HeaderValue>,
    body: Bytes,
) -> Result<(StatusCode, Option<hyper::header::HeaderValue>, Bytes), String> {
    let mut request = Request::builder()
        .method(method)
        .uri(path_and_query)
        .header("host", format!("{}:{}", config.agent_host, config.agent_port));
    if let Some(ctype) = content_type {
        request = request.header("content-type", ctype);
    }
    let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
    let work = https(config.client.clone(), &config.agent_host, config.agent_port, request);
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

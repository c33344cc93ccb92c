//! The shared client's connector: a TCP connection with a connect timeout, through the proxy
//! the environment names when it names one for the destination. `https://` goes through an
//! HTTP CONNECT tunnel (TLS then runs end to end, inside it); `http://` is sent to the proxy
//! in absolute form (`GET http://host/path`), with `Proxy-Authorization` when the proxy's URL
//! carries credentials. Which destinations use a proxy is hyper-util's matcher, which reads
//! `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and `NO_PROXY` as curl does.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use http::header::{HeaderMap, HeaderValue, PROXY_AUTHORIZATION};
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The proxies a client uses, and for which destinations.
pub(super) struct Proxies {
    matcher: Matcher,
    /// How the matcher was made, to make another for [`ForwardAuth`].
    setting: super::Proxy,
}

impl Proxies {
    /// The proxies `setting` names, or `None` when it names none (then no destination is
    /// matched at all).
    pub(super) fn new(setting: &super::Proxy) -> Option<Self> {
        let named = match setting {
            super::Proxy::Off => false,
            super::Proxy::FromEnv => super::PROXY_VARIABLES
                .iter()
                .any(|v| std::env::var_os(v).is_some_and(|x| !x.is_empty())),
            super::Proxy::Use { https, http, .. } => https.is_some() || http.is_some(),
        };
        named.then(|| Self {
            matcher: Self::matcher(setting),
            setting: setting.clone(),
        })
    }

    fn matcher(setting: &super::Proxy) -> Matcher {
        match setting {
            super::Proxy::Use {
                https,
                http,
                no_proxy,
            } => Matcher::builder()
                .https(https.clone().unwrap_or_default())
                .http(http.clone().unwrap_or_default())
                .no(no_proxy.clone())
                .build(),
            super::Proxy::FromEnv | super::Proxy::Off => Matcher::from_env(),
        }
    }

    /// What plain-HTTP requests forwarded to a proxy with credentials must carry.
    pub(super) fn forward_auth(&self) -> Option<ForwardAuth> {
        // The matcher answers per destination; the proxy for plain HTTP is the same for every
        // destination it does not exclude, so any http:// URI shows its credentials.
        let probe = Uri::from_static("http://conveyor.invalid/");
        let auth = self.matcher.intercept(&probe)?.basic_auth()?.clone();
        Some(ForwardAuth {
            matcher: Self::matcher(&self.setting),
            auth,
        })
    }
}

/// `Proxy-Authorization` for plain-HTTP requests that go to a proxy.
pub(super) struct ForwardAuth {
    matcher: Matcher,
    auth: HeaderValue,
}

impl ForwardAuth {
    /// Adds the header when `uri` is plain HTTP and goes through the proxy.
    pub(super) fn add_to(&self, uri: &Uri, headers: &mut HeaderMap) {
        if uri.scheme_str() == Some("http") && self.matcher.intercept(uri).is_some() {
            let mut v = self.auth.clone();
            v.set_sensitive(true);
            headers.insert(PROXY_AUTHORIZATION, v);
        }
    }
}

/// Opens connections: directly, or through a proxy.
#[derive(Clone)]
pub(super) struct Connector {
    tcp: HttpConnector,
    proxies: Option<Arc<Proxies>>,
}

impl Connector {
    pub(super) fn new(connect_timeout: Duration, proxies: Option<Proxies>) -> Self {
        let mut tcp = HttpConnector::new();
        // https:// destinations reach this connector too (TLS wraps what it returns).
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(connect_timeout));
        Self {
            tcp,
            proxies: proxies.map(Arc::new),
        }
    }
}

impl Service<Uri> for Connector {
    type Response = Stream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.tcp.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let through = self
            .proxies
            .as_ref()
            .and_then(|p| p.matcher.intercept(&dst));
        let mut tcp = self.tcp.clone();
        Box::pin(async move {
            if let Some(p) = &through
                && p.uri().scheme_str() != Some("http")
            {
                return Err(format!(
                    "proxy {}: only http:// proxies are supported (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY)",
                    p.uri().authority().map_or("", |a| a.as_str())
                )
                .into());
            }
            match through {
                None => Ok(Stream {
                    io: tcp.call(dst).await?,
                    proxied: false,
                }),
                Some(proxy) if dst.scheme_str() == Some("https") => {
                    let mut tunnel = Tunnel::new(proxy.uri().clone(), tcp);
                    if let Some(auth) = proxy.basic_auth() {
                        tunnel = tunnel.with_auth(auth.clone());
                    }
                    Ok(Stream {
                        io: tunnel.call(dst).await?,
                        proxied: false,
                    })
                }
                Some(proxy) => Ok(Stream {
                    io: tcp.call(proxy.uri().clone()).await?,
                    proxied: true,
                }),
            }
        })
    }
}

/// A connection, saying whether requests on it go to a forwarding proxy (then in absolute
/// form).
pub(super) struct Stream {
    io: TokioIo<TcpStream>,
    proxied: bool,
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        self.io.connected().proxy(self.proxied)
    }
}

impl Read for Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl Write for Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
}

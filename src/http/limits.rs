//! Request body limits shared by both listeners: a body must arrive whole, within a deadline
//! and a size, before any handler runs.
//!
//! actix-web cuts a slow first request head and idle keep-alive connections by itself (not
//! the head of a later request on a kept-alive connection: see the public listener in
//! `app.rs`), but once a request's headers are complete it waits for a chunked body for
//! ever, and after answering it drains an unread chunked body for ever too. One client could
//! hold a connection per socket, without credentials, until the process ran out of file
//! descriptors. This middleware reads every body itself, under [`BodyPolicy::deadline`], and
//! hands handlers a complete in-memory body; on the public listener, whose routes take no
//! body, a body is not read at all and the connection closes after the answer.
//!
//! Whenever a body is left unread, the connection must close: keeping the unfinished payload
//! alive until the answer is written is what makes actix close it (see [`HoldingBody`]).

use std::pin::Pin;
use std::time::Duration;

use actix_web::body::{BodySize, BoxBody, EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, ResponseError};
use bytes::{Bytes, BytesMut};
use futures_core::Stream;

/// A body refused before the handler ran. `problem` maps it to HTTP (and implements
/// `ResponseError` for it, so this module needs nothing from there).
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("the request body is larger than this endpoint accepts ({max_bytes} bytes)")]
    TooLarge { max_bytes: usize },
    #[error("the request body could not be read (malformed chunked encoding?)")]
    Broken,
    #[error("the request body did not arrive within {}", humantime::format_duration(*.deadline))]
    Timeout { deadline: Duration },
}

/// How much body a listener accepts, and how long it waits for it.
#[derive(Clone, Debug)]
pub struct BodyPolicy {
    /// `None`: the listener's routes take no body. A body is then not read at all: the
    /// request is answered as if it had none, and the connection closed after the answer.
    pub max_bytes: Option<usize>,
    /// Time for the whole body to arrive once the headers are in.
    pub deadline: Duration,
}

/// A response body that also holds the request's unread payload, when there is one, until
/// the answer is written: actix decides whether to keep the connection alive when the body
/// ends, and it closes it only while the unread payload is still held (a dropped chunked
/// payload is drained, for as long as the client cares to trickle it).
pub struct HoldingBody<B> {
    inner: B,
    _unread: Option<Payload>,
}

impl<B: MessageBody + Unpin> MessageBody for HoldingBody<B> {
    type Error = B::Error;

    fn size(&self) -> BodySize {
        self.inner.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        Pin::new(&mut this.inner).poll_next(cx)
    }
}

type Guarded<B> = ServiceResponse<HoldingBody<EitherBody<B, BoxBody>>>;

/// The middleware (`actix_web::middleware::from_fn(limits::guard_body)`); reads the
/// listener's [`BodyPolicy`] from app data.
pub async fn guard_body<B: MessageBody + Unpin + 'static>(
    mut req: ServiceRequest,
    next: Next<B>,
) -> Result<Guarded<B>, actix_web::Error> {
    let passed = |res: ServiceResponse<B>, unread: Option<Payload>| {
        res.map_body(|_, inner| HoldingBody {
            inner: EitherBody::left(inner),
            _unread: unread,
        })
    };
    let Some(policy) = req.app_data::<web::Data<BodyPolicy>>().cloned() else {
        return Ok(passed(next.call(req).await?, None));
    };
    let declared = declared_length(&req);
    if declared == Declared::None {
        return Ok(passed(next.call(req).await?, None));
    }
    let refuse = |req: ServiceRequest, payload: Payload, refusal: LimitError| {
        let (http, _) = req.into_parts();
        let mut response = refusal.error_response();
        response
            .head_mut()
            .set_connection_type(actix_web::http::ConnectionType::Close);
        let response = response.map_body(|_, inner| HoldingBody {
            inner: EitherBody::right(inner),
            _unread: Some(payload),
        });
        Ok(ServiceResponse::new(http, response))
    };
    let mut payload = req.take_payload();
    let Some(max_bytes) = policy.max_bytes else {
        // Answered without its body (the handler sees none), then the connection closes.
        let response = next.call(req).await?;
        return Ok(passed(response, Some(payload)));
    };
    if let Declared::Length(length) = declared {
        if length > max_bytes as u64 {
            return refuse(req, payload, LimitError::TooLarge { max_bytes });
        }
    }
    match tokio::time::timeout(policy.deadline, read_body(&mut payload, max_bytes)).await {
        Ok(Ok(body)) => {
            req.set_payload(Payload::from(body.freeze()));
            Ok(passed(next.call(req).await?, None))
        }
        Ok(Err(BodyError::TooLarge)) => refuse(req, payload, LimitError::TooLarge { max_bytes }),
        Ok(Err(BodyError::Broken)) => refuse(req, payload, LimitError::Broken),
        Err(_elapsed) => refuse(
            req,
            payload,
            LimitError::Timeout {
                deadline: policy.deadline,
            },
        ),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Declared {
    None,
    Length(u64),
    Chunked,
}

fn declared_length(req: &ServiceRequest) -> Declared {
    let headers = req.headers();
    if headers.contains_key(header::TRANSFER_ENCODING) {
        return Declared::Chunked;
    }
    match headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
    {
        None | Some(0) => Declared::None,
        Some(n) => Declared::Length(n),
    }
}

enum BodyError {
    TooLarge,
    Broken,
}

async fn read_body(payload: &mut Payload, max_bytes: usize) -> Result<BytesMut, BodyError> {
    let mut body = BytesMut::new();
    loop {
        let chunk = std::future::poll_fn(|cx| Pin::new(&mut *payload).poll_next(cx)).await;
        match chunk {
            None => return Ok(body),
            Some(Err(_)) => return Err(BodyError::Broken),
            Some(Ok(bytes)) => {
                if body.len() + bytes.len() > max_bytes {
                    return Err(BodyError::TooLarge);
                }
                body.extend_from_slice(&bytes);
            }
        }
    }
}

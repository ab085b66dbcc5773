//! An `object_store` error → whether waiting can fix it, S3's error code, and one line
//! saying what went wrong (pure).
//!
//! object_store retries a failing request a few times itself. What it still cannot do, and
//! every refusal it has no variant of its own for, comes back as `Generic`, with the cause
//! in the error's source chain: a transport failure (no connection, a timeout) as an
//! `HttpError`, an HTTP answer as its status line and S3's XML error body
//! (`<Code>SlowDown</Code>`). Waiting fixes the transport, 5xx, throttling and timeouts; it
//! does not fix a 400 or a missing bucket, which must stop the pipeline instead.

use std::error::Error;

use object_store::client::HttpError;

/// S3 error codes that mean "try again later" (AWS's S3 error responses).
const TRANSIENT_CODES: &[&str] = &[
    "SlowDown",
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "RequestTimeout",
    "InternalError",
    "ServiceUnavailable",
    "OperationAborted",
];

/// Whether waiting and trying again can make `error` go away.
pub fn transient(error: &object_store::Error) -> bool {
    match error {
        object_store::Error::JoinError { .. } => true,
        object_store::Error::Generic { source, .. } => {
            let cause: &(dyn Error + 'static) = source.as_ref();
            if chain(cause).any(|e| e.downcast_ref::<HttpError>().is_some()) {
                return true;
            }
            let text = text_of(cause);
            match (error_code(&text), status(&text)) {
                (Some(code), _) => TRANSIENT_CODES.contains(&code),
                (None, Some(status)) => status >= 500 || status == 429 || status == 408,
                // Nothing says what it was: waiting, as for an outage, loses nothing.
                (None, None) => true,
            }
        }
        _ => false,
    }
}

/// S3's error code (`NoSuchBucket`, `InvalidArgument`, …) in `error`'s answer, if it has one.
pub fn code(error: &object_store::Error) -> Option<String> {
    let text = text_of(error);
    error_code(&text).map(str::to_string)
}

/// `error` in one line: S3's code and message when it answered with them, its own words
/// otherwise.
pub fn one_line(error: &object_store::Error) -> String {
    answered(&text_of(error)).unwrap_or_else(|| {
        error
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    })
}

/// S3's code and message (`NoSuchBucket: The specified bucket does not exist`) in `text`,
/// an XML error body or an error quoting one.
pub fn answered(text: &str) -> Option<String> {
    let code = error_code(text)?;
    Some(match between(text, "<Message>", "</Message>") {
        Some(message) => format!("{code}: {message}"),
        None => code.to_string(),
    })
}

fn chain<'a>(error: &'a (dyn Error + 'static)) -> impl Iterator<Item = &'a (dyn Error + 'static)> {
    std::iter::successors(Some(error), |&e| e.source())
}

/// Every message of the chain, one after another.
fn text_of(error: &(dyn Error + 'static)) -> String {
    chain(error)
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// S3's error code in `text` (`<Code>NoSuchBucket</Code>`), an XML error body or an error
/// quoting one.
pub fn error_code(text: &str) -> Option<&str> {
    between(text, "<Code>", "</Code>")
}

/// The HTTP status object_store quotes (`… status code: 400 Bad Request …`).
fn status(text: &str) -> Option<u16> {
    let after = text.split_once("status code: ")?.1;
    after.get(..3)?.parse().ok()
}

fn between<'a>(text: &'a str, open: &str, close: &str) -> Option<&'a str> {
    let start = text.find(open)? + open.len();
    let len = text[start..].find(close)?;
    Some(text[start..start + len].trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::client::HttpErrorKind;

    /// An error as object_store's S3 client wraps it: `Generic`, whose source is the
    /// request's error, whose source is what the request got.
    #[derive(Debug)]
    struct Wrapped(String, Option<Box<dyn Error + Send + Sync>>);

    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl Error for Wrapped {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|e| e as &(dyn Error + 'static))
        }
    }

    fn generic(source: Box<dyn Error + Send + Sync>) -> object_store::Error {
        object_store::Error::Generic {
            store: "S3",
            source,
        }
    }

    fn answered(status: &str, body: &str) -> object_store::Error {
        generic(Box::new(Wrapped(
            "Error performing PUT http://127.0.0.1:4566/b/k in 3ms".into(),
            Some(Box::new(Wrapped(
                format!("Server returned non-2xx status code: {status}: {body}"),
                None,
            ))),
        )))
    }

    fn xml(code: &str) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\n\
             <Message>The thing was refused.</Message><RequestId>1</RequestId></Error>"
        )
    }

    #[test]
    fn waiting_fixes_outages_throttling_and_5xx_not_refusals() {
        let no_connection = generic(Box::new(Wrapped(
            "Error performing GET".into(),
            Some(Box::new(HttpError::new(
                HttpErrorKind::Connect,
                std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
            ))),
        )));
        assert!(transient(&no_connection));
        assert!(transient(&answered(
            "503 Service Unavailable",
            &xml("SlowDown")
        )));
        assert!(transient(&answered("500 Internal Server Error", "")));
        assert!(transient(&answered("429 Too Many Requests", "")));
        assert!(transient(&answered(
            "400 Bad Request",
            &xml("RequestTimeout")
        )));
        assert!(!transient(&answered(
            "400 Bad Request",
            &xml("InvalidArgument")
        )));
        assert!(!transient(&answered(
            "416 Range Not Satisfiable",
            &xml("InvalidRange")
        )));
        assert!(!transient(&answered("404 Not Found", &xml("NoSuchBucket"))));
        assert!(!transient(&answered("400 Bad Request", "")));
        assert!(transient(&generic("something unexplained".into())));
        let denied = object_store::Error::PermissionDenied {
            path: "b/k".into(),
            source: "no".into(),
        };
        assert!(!transient(&denied));
    }

    #[test]
    fn the_code_and_one_line_come_from_s3s_answer() {
        let missing = answered("404 Not Found", &xml("NoSuchBucket"));
        assert_eq!(code(&missing).as_deref(), Some("NoSuchBucket"));
        assert_eq!(one_line(&missing), "NoSuchBucket: The thing was refused.");
        let bare = answered("400 Bad Request", "");
        assert_eq!(code(&bare), None);
        assert!(!one_line(&bare).contains('\n'), "{}", one_line(&bare));
    }
}

//! AWS MSK IAM authentication → OAUTHBEARER tokens: SigV4-presigned `kafka-cluster:Connect`
//! URLs signed with the AWS credentials of the environment (variables, profile, web
//! identity, instance or task role), valid 15 minutes. librdkafka asks for the next token
//! when 80% of a token's lifetime has passed, so a client never holds an expired one.

use std::sync::OnceLock;

use aws_config::{BehaviorVersion, Region};
use aws_credential_types::provider::SharedCredentialsProvider;
use rdkafka::client::OAuthToken;

/// The principal librdkafka records with a token; MSK takes the identity from the signature.
const PRINCIPAL: &str = "pageview";

type TokenError = Box<dyn std::error::Error + Send + Sync>;

pub struct MskIam {
    region: Region,
    /// Loaded at the first token, then reused: the provider caches and renews credentials.
    credentials: OnceLock<SharedCredentialsProvider>,
}

impl MskIam {
    pub fn new(region: &str) -> Self {
        MskIam {
            region: Region::new(region.to_string()),
            credentials: OnceLock::new(),
        }
    }

    /// Signs with `credentials` instead of the environment's.
    #[cfg(test)]
    fn with_credentials(region: &str, credentials: SharedCredentialsProvider) -> Self {
        let msk_iam = MskIam::new(region);
        let _ = msk_iam.credentials.set(credentials);
        msk_iam
    }

    /// A fresh token; librdkafka calls this on the thread that polls the client.
    pub fn token(&self) -> Result<OAuthToken, TokenError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let credentials = match self.credentials.get() {
                Some(credentials) => credentials.clone(),
                None => {
                    let config = aws_config::defaults(BehaviorVersion::latest())
                        .region(self.region.clone())
                        .load()
                        .await;
                    let provider = config
                        .credentials_provider()
                        .ok_or("no AWS credentials found for AWS_MSK_IAM")?;
                    self.credentials.get_or_init(|| provider).clone()
                }
            };
            let (token, expires_ms) =
                aws_msk_iam_sasl_signer::generate_auth_token_from_credentials_provider(
                    self.region.clone(),
                    credentials,
                )
                .await?;
            Ok(OAuthToken {
                token,
                principal_name: PRINCIPAL.to_string(),
                lifetime_ms: expires_ms,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::Credentials;

    fn decode(token: &str) -> String {
        use base64::Engine;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .expect("URL-safe base64 without padding, as MSK expects");
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn a_token_is_a_presigned_connect_url_for_the_region_that_expires_in_15_minutes() {
        let credentials = Credentials::new("AKIDEXAMPLE", "secret", None, None, "test");
        let msk_iam =
            MskIam::with_credentials("eu-west-1", SharedCredentialsProvider::new(credentials));
        let before = crate::generate::now_ms();
        let token = msk_iam.token().unwrap();
        assert!(!token.token.contains(['+', '/', '=']), "URL-safe, unpadded");
        let url = decode(&token.token);
        assert!(
            url.starts_with(
                "https://kafka.eu-west-1.amazonaws.com/?Action=kafka-cluster%3AConnect&"
            ),
            "{url}"
        );
        for part in [
            "X-Amz-Algorithm=AWS4-HMAC-SHA256",
            "X-Amz-Credential=AKIDEXAMPLE%2F",
            "%2Feu-west-1%2Fkafka-cluster%2Faws4_request",
            "X-Amz-Expires=900",
            "X-Amz-Signature=",
            "User-Agent=aws-msk-iam-sasl-signer-rs",
        ] {
            assert!(url.contains(part), "{part} in {url}");
        }
        assert!(!url.contains("secret"), "the secret key only signs: {url}");
        // Signed now (to the second), for 900 s: librdkafka refreshes at 80%, after 12 min.
        let lifetime = token.lifetime_ms - before;
        assert!((899_000..=901_000).contains(&lifetime), "{lifetime}");
        assert_eq!(token.principal_name, PRINCIPAL);

        let next = msk_iam.token().unwrap();
        assert!(
            next.lifetime_ms >= token.lifetime_ms,
            "each refresh signs anew"
        );
    }
}

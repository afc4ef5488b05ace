//! Amazon SNS message signatures: whether an SNS message (a notification,
//! a subscription or unsubscribe confirmation) was signed by the key of
//! an SNS signing certificate. No IO here: the caller fetches the
//! certificate from the message's `SigningCertURL`, which must be an HTTPS
//! URL of `sns.<region>.amazonaws.com` (checked by [`cert_url_allowed`]).
//!
//! The rules are AWS's ("Verifying the signatures of Amazon SNS
//! messages"): the string to sign is `Name\nvalue\n` for a fixed list of
//! fields in a fixed order; `SignatureVersion` 1 is RSA with SHA-1, 2 is
//! RSA with SHA-256; the certificate names `sns.amazonaws.com`. Its name
//! alone proves nothing (anyone can make a certificate with that name):
//! it must chain to a trusted root, the public roots (Mozilla's, as
//! `webpki-roots` carries them) unless `sns_trust_anchors_file` names
//! others. SNS serves the leaf alone, so its issuer is fetched from the
//! address the leaf names (Authority Information Access), only from a host
//! under `amazontrust.com` ([`issuer_url`]).

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{
    AlgorithmIdentifier, CertificateDer, InvalidSignature, ServerName,
    SignatureVerificationAlgorithm, alg_id,
};
use serde_json::Value;

/// The name every SNS signing certificate is issued for.
pub const SIGNER: &str = "sns.amazonaws.com";

/// Whether `url` may be fetched as a signing certificate: HTTPS, the
/// default port, an `sns.<region>.amazonaws.com` host (or `.com.cn`), a
/// `.pem` path, and nothing else in it.
pub fn cert_url_allowed(url: &str) -> bool {
    let Ok(u) = reqwest::Url::parse(url) else {
        return false;
    };
    let aws = is_sns_host(u.host_str().unwrap_or(""));
    u.scheme() == "https"
        && u.port().is_none()
        && u.username().is_empty()
        && u.password().is_none()
        && u.query().is_none()
        && aws
        && u.path().ends_with(".pem")
}

/// Whether `host` is an SNS endpoint: `sns.<region>.amazonaws.com` (or
/// `.com.cn`), the region a real region name's shape. The one check for
/// every URL an SNS message names (its certificate, its subscription).
pub fn is_sns_host(host: &str) -> bool {
    let labels: Vec<&str> = host.split('.').collect();
    matches!(
        labels.as_slice(),
        ["sns", region, "amazonaws", "com"] | ["sns", region, "amazonaws", "com", "cn"]
            if is_region(region)
    )
}

/// Whether `s` has the shape of an AWS region name: `us-east-1`,
/// `ap-southeast-2`, `us-gov-west-1`, `cn-north-1` (a two-letter area,
/// words, a number). Not `s3` or `s3-eu-west-1`: `sns.s3.amazonaws.com` is
/// an S3 bucket's endpoint, which anyone can fill.
fn is_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    let [area, words @ .., number] = parts.as_slice() else {
        return false;
    };
    area.len() == 2
        && area.bytes().all(|b| b.is_ascii_lowercase())
        && !words.is_empty()
        && words
            .iter()
            .all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()))
        && !number.is_empty()
        && number.len() <= 2
        && number.bytes().all(|b| b.is_ascii_digit())
}

/// The fields signed for each message type, in the order they are signed.
fn signed_fields(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Notification" => Some(&[
            "Message",
            "MessageId",
            "Subject",
            "Timestamp",
            "TopicArn",
            "Type",
        ]),
        "SubscriptionConfirmation" | "UnsubscribeConfirmation" => Some(&[
            "Message",
            "MessageId",
            "SubscribeURL",
            "Timestamp",
            "Token",
            "TopicArn",
            "Type",
        ]),
        _ => None,
    }
}

/// The string an SNS message's signature covers. `Subject` is left out
/// when the message has none; every other field must be there.
pub fn string_to_sign(msg: &Value) -> Result<String, String> {
    let kind = msg
        .get("Type")
        .and_then(Value::as_str)
        .ok_or("an SNS message without a Type")?;
    let fields = signed_fields(kind).ok_or_else(|| format!("unknown SNS message Type {kind:?}"))?;
    let mut out = String::new();
    for &name in fields {
        match msg.get(name) {
            Some(Value::String(v)) => {
                out.push_str(name);
                out.push('\n');
                out.push_str(v);
                out.push('\n');
            }
            None | Some(Value::Null) if name == "Subject" => {}
            _ => return Err(format!("an SNS {kind} without a {name} string")),
        }
    }
    Ok(out)
}

/// The roots an SNS signing certificate must chain to.
#[derive(Debug, Clone)]
pub struct Trust {
    anchors: Vec<rustls_pki_types::TrustAnchor<'static>>,
}

impl Trust {
    /// The public roots (the Mozilla set).
    pub fn public() -> Self {
        Trust {
            anchors: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        }
    }

    /// The roots in a PEM bundle instead (a relay's own, or a test's).
    pub fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let mut anchors = Vec::new();
        for der in CertificateDer::pem_slice_iter(pem) {
            let der = der.map_err(|e| format!("not a PEM certificate: {e}"))?;
            let anchor = webpki::anchor_from_trusted_cert(&der)
                .map_err(|e| format!("a certificate that cannot be a root: {e}"))?;
            anchors.push(anchor.to_owned());
        }
        if anchors.is_empty() {
            return Err("no certificate in it".into());
        }
        Ok(Trust { anchors })
    }
}

/// The certificates of a PEM file, the signing certificate first.
pub fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .take(8)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("the signing certificate is not a PEM certificate: {e}"))?;
    if certs.is_empty() {
        return Err("the signing certificate is not a PEM certificate: none in it".into());
    }
    Ok(certs)
}

/// Where the issuer of `cert` may be fetched: its Authority Information
/// Access `caIssuers` URI, when it is an `http(s)` URL of a host under
/// `amazontrust.com` (Amazon's CA; no other host is visited).
pub fn issuer_url(cert: &[u8]) -> Option<String> {
    // id-ad-caIssuers (1.3.6.1.5.5.7.48.2), then a GeneralName [6] URI.
    const CA_ISSUERS: [u8; 10] = [0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x02];
    let at = cert
        .windows(CA_ISSUERS.len())
        .position(|w| w == CA_ISSUERS)?
        + CA_ISSUERS.len();
    let rest = cert.get(at..)?;
    let (&tag, rest) = rest.split_first()?;
    let (&len, rest) = rest.split_first()?;
    if tag != 0x86 || len >= 0x80 {
        return None;
    }
    let url = std::str::from_utf8(rest.get(..usize::from(len))?).ok()?;
    let u = reqwest::Url::parse(url).ok()?;
    let host = u.host_str()?.to_ascii_lowercase();
    (matches!(u.scheme(), "http" | "https")
        && u.username().is_empty()
        && u.password().is_none()
        && u.port().is_none()
        && host.ends_with(".amazontrust.com"))
    .then(|| url.to_string())
}

/// An issuer's certificate as fetched: DER, or PEM.
pub fn issuer_certificate(bytes: &[u8]) -> Result<CertificateDer<'static>, String> {
    if bytes.starts_with(b"-----") {
        return certificates(bytes)?
            .into_iter()
            .next()
            .ok_or_else(|| "empty".into());
    }
    Ok(CertificateDer::from(bytes.to_vec()))
}

/// Checks `msg`'s signature against the signing certificate, the first of
/// `certs` (the others, and the issuers fetched for it, are intermediates),
/// which must chain to `trust` at `now` and be issued for [`SIGNER`].
pub fn verify(
    msg: &Value,
    certs: &[CertificateDer<'_>],
    trust: &Trust,
    now: rustls_pki_types::UnixTime,
) -> Result<(), String> {
    let text = |name: &str| msg.get(name).and_then(Value::as_str);
    let alg: &dyn SignatureVerificationAlgorithm = match text("SignatureVersion") {
        Some("1") => &RSA_SHA1,
        Some("2") => webpki::ring::RSA_PKCS1_2048_8192_SHA256,
        Some(v) => {
            return Err(format!(
                "unknown SignatureVersion {v:?} (1 and 2 are known)"
            ));
        }
        None => return Err("the message is not signed (no SignatureVersion)".into()),
    };
    let signature = {
        use base64::Engine;
        let s = text("Signature").ok_or("the message is not signed (no Signature)")?;
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .map_err(|e| format!("Signature is not base64: {e}"))?
    };
    let (der, intermediates) = certs
        .split_first()
        .ok_or("the signing certificate is not a PEM certificate: none in it")?;
    let cert = webpki::EndEntityCert::try_from(der)
        .map_err(|e| format!("the signing certificate does not parse: {e}"))?;
    cert.verify_for_usage(
        webpki::ALL_VERIFICATION_ALGS,
        &trust.anchors,
        intermediates,
        now,
        webpki::KeyUsage::server_auth(),
        None,
        None,
    )
    .map_err(|e| format!("the signing certificate does not chain to a trusted root ({e})"))?;
    let signer = ServerName::try_from(SIGNER).expect("a DNS name");
    cert.verify_is_valid_for_subject_name(&signer)
        .map_err(|_| format!("the signing certificate is not issued for {SIGNER}"))?;
    let signed = string_to_sign(msg)?;
    cert.verify_signature(alg, signed.as_bytes(), &signature)
        .map_err(|_| "the signature does not match the message".to_string())
}

/// RSA PKCS#1 v1.5 with SHA-1: what `SignatureVersion` 1 means. Legacy,
/// but SNS still signs with it unless the topic asks for version 2.
#[derive(Debug)]
struct RsaSha1;

static RSA_SHA1: RsaSha1 = RsaSha1;

impl SignatureVerificationAlgorithm for RsaSha1 {
    fn verify_signature(
        &self,
        public_key: &[u8],
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), InvalidSignature> {
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            public_key,
        )
        .verify(message, signature)
        .map_err(|_| InvalidSignature)
    }

    fn public_key_alg_id(&self) -> AlgorithmIdentifier {
        alg_id::RSA_ENCRYPTION
    }

    fn signature_alg_id(&self) -> AlgorithmIdentifier {
        // sha1WithRSAEncryption (1.2.840.113549.1.1.5), NULL parameters.
        AlgorithmIdentifier::from_slice(&[
            0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x05, 0x05, 0x00,
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate's bytes around an Authority Information Access
    /// `caIssuers` URI.
    fn with_issuer(url: &str) -> Vec<u8> {
        let mut der = vec![0x30, 0x82, 0x01, 0x00];
        der.extend([
            0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x02, 0x86,
        ]);
        der.push(u8::try_from(url.len()).unwrap());
        der.extend(url.as_bytes());
        der.extend([0x30, 0x00]);
        der
    }

    #[test]
    fn an_issuer_is_fetched_only_from_amazons_ca() {
        for ok in [
            "http://crt.r2m01.amazontrust.com/r2m01.cer",
            "https://crt.rootca1.amazontrust.com/rootca1.cer",
        ] {
            assert_eq!(issuer_url(&with_issuer(ok)).as_deref(), Some(ok));
        }
        for bad in [
            "http://evil.test/r2m01.cer",
            "http://amazontrust.com.evil.test/x.cer",
            "http://crt.r2m01.amazontrust.com:8080/x.cer",
            "http://user@crt.r2m01.amazontrust.com/x.cer",
            "ftp://crt.r2m01.amazontrust.com/x.cer",
            "file:///etc/passwd",
        ] {
            assert_eq!(issuer_url(&with_issuer(bad)), None, "{bad}");
        }
        assert_eq!(issuer_url(b"no extension"), None);
        assert_eq!(issuer_url(&with_issuer("")[..14]), None);
    }

    #[test]
    fn the_string_to_sign_follows_the_type() {
        let n = serde_json::json!({
            "Type": "Notification", "MessageId": "m", "TopicArn": "t",
            "Message": "hi", "Timestamp": "2021-04-26T11:05:00.000Z",
        });
        assert_eq!(
            string_to_sign(&n).unwrap(),
            "Message\nhi\nMessageId\nm\nTimestamp\n2021-04-26T11:05:00.000Z\nTopicArn\nt\nType\nNotification\n"
        );
        let c = serde_json::json!({
            "Type": "SubscriptionConfirmation", "MessageId": "m", "TopicArn": "t",
            "Message": "hi", "Timestamp": "x", "Token": "k", "SubscribeURL": "u",
        });
        assert_eq!(
            string_to_sign(&c).unwrap(),
            "Message\nhi\nMessageId\nm\nSubscribeURL\nu\nTimestamp\nx\nToken\nk\nTopicArn\nt\nType\nSubscriptionConfirmation\n"
        );
        let mut bad = c.clone();
        bad["Token"] = serde_json::json!(7);
        assert!(
            string_to_sign(&bad)
                .unwrap_err()
                .contains("without a Token")
        );
    }

    #[test]
    fn certificates_come_only_from_sns_over_https() {
        for ok in [
            "https://sns.us-east-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem",
            "https://sns.us-gov-west-1.amazonaws.com/SimpleNotificationService-abc.pem",
            "https://sns.ap-southeast-2.amazonaws.com/SimpleNotificationService-abc.pem",
        ] {
            assert!(cert_url_allowed(ok), "{ok}");
        }
        for bad in [
            "http://sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com:8443/x.pem",
            "https://sns.us-east-1.amazonaws.com.evil.test/x.pem",
            "https://sns.amazonaws.com@evil.test/x.pem",
            "https://evil.test/sns.us-east-1.amazonaws.com/x.pem",
            "https://sns.us-east-1.amazonaws.com/x.pem?redirect=1",
            "https://sns.us-east-1.amazonaws.com/x.txt",
            "https://s3.us-east-1.amazonaws.com/x.pem",
            // Issue 20, item 11: S3 bucket endpoints are not SNS.
            "https://sns.s3.amazonaws.com/x.pem",
            "https://sns.s3-eu-west-1.amazonaws.com/x.pem",
            "https://sns.-.amazonaws.com/x.pem",
            "https://sns.us-east-.amazonaws.com/x.pem",
            "https://sns.useast1.amazonaws.com/x.pem",
        ] {
            assert!(!cert_url_allowed(bad), "{bad}");
        }
    }
}

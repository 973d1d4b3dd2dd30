//! What a certificate says, read with yasna (the DER reader rcgen writes with, so no
//! second ASN.1 stack is compiled): the names, validity, key, and the extensions `certs`
//! issues and checks. Only what Slipway reads; signatures are webpki's to check.

use std::fmt;

use rcgen::{BasicConstraints, DistinguishedName, DnType, DnValue, IsCa, KeyIdMethod, KeyUsagePurpose};
use yasna::models::ObjectIdentifier;
use yasna::{ASN1Error, ASN1ErrorKind, ASN1Result, BERReader, Tag};

/// One attribute of a distinguished name, with its string type kept: a CA's name must be
/// written into the certificates it signs byte for byte as its own says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub oid: Vec<u64>,
    /// The universal tag of the value (12 UTF8String, 19 PrintableString, 22 IA5String, ...).
    pub tag: u64,
    pub bytes: Vec<u8>,
}

/// A distinguished name, in its order (one attribute per relative name, as issued here).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Name(pub Vec<Attribute>);

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Certificate {
    pub issuer: Name,
    pub subject: Name,
    pub not_before: i64,
    pub not_after: i64,
    /// The whole SubjectPublicKeyInfo, as rcgen's `subject_public_key_info()` gives it.
    pub spki: Vec<u8>,
    /// `DNS:name` or `IP:address`, as `certs status` shows them.
    pub sans: Vec<String>,
    /// None without the extension.
    pub key_usage: Option<KeyUsage>,
    pub extended_key_usage: Vec<Vec<u64>>,
    /// BasicConstraints: Some(path length limit) for a CA.
    pub ca: Option<Option<u64>>,
    pub subject_key_id: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyUsage {
    pub digital_signature: bool,
    pub key_encipherment: bool,
    pub key_cert_sign: bool,
    pub crl_sign: bool,
}

pub const SERVER_AUTH: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 3, 1];
pub const CLIENT_AUTH: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 3, 2];
pub const ANY_EXTENDED_KEY_USAGE: &[u64] = &[2, 5, 29, 37, 0];

const SUBJECT_KEY_ID: &[u64] = &[2, 5, 29, 14];
const KEY_USAGE: &[u64] = &[2, 5, 29, 15];
const SUBJECT_ALT_NAME: &[u64] = &[2, 5, 29, 17];
const BASIC_CONSTRAINTS: &[u64] = &[2, 5, 29, 19];
const EXTENDED_KEY_USAGE: &[u64] = &[2, 5, 29, 37];

/// The attribute types Slipway's names use, with their short names.
const SHORT_NAMES: &[(&[u64], &str)] = &[
    (&[2, 5, 4, 3], "CN"),
    (&[2, 5, 4, 6], "C"),
    (&[2, 5, 4, 7], "L"),
    (&[2, 5, 4, 8], "ST"),
    (&[2, 5, 4, 10], "O"),
    (&[2, 5, 4, 11], "OU"),
];

/// Read a DER certificate (BER is accepted too, as the bundles of other tools may hold it).
pub fn parse(der: &[u8]) -> ASN1Result<Certificate> {
    yasna::parse_ber(der, |r| {
        r.read_sequence(|r| {
            let cert = r.next().read_sequence(tbs)?;
            r.next().read_der()?; // signatureAlgorithm
            r.next().read_bitvec_bytes()?; // signatureValue
            Ok(cert)
        })
    })
}

fn tbs(r: &mut yasna::BERReaderSeq) -> ASN1Result<Certificate> {
    let mut c = Certificate::default();
    r.read_optional(|r| r.read_tagged(Tag::context(0), |r| r.read_u8()))?;
    r.next().read_der()?; // serialNumber
    r.next().read_der()?; // signature
    c.issuer = name(r.next())?;
    r.next().read_sequence(|r| {
        c.not_before = time(r.next())?;
        c.not_after = time(r.next())?;
        Ok(())
    })?;
    c.subject = name(r.next())?;
    c.spki = r.next().read_der()?;
    // issuerUniqueID [1] and subjectUniqueID [2], which nothing issues any more.
    for n in [1, 2] {
        r.read_optional(|r| r.read_tagged_implicit(Tag::context(n), |r| r.read_bitvec_bytes()))?;
    }
    let extensions = r.read_optional(|r| {
        r.read_tagged(Tag::context(3), |r| {
            r.collect_sequence_of(|r| {
                r.read_sequence(|r| {
                    let oid = r.next().read_oid()?;
                    r.read_optional(|r| r.read_bool())?;
                    let value = r.next().read_bytes()?;
                    Ok((oid, value))
                })
            })
        })
    })?;
    for (oid, value) in extensions.unwrap_or_default() {
        extension(&mut c, &oid, &value)?;
    }
    Ok(c)
}

fn extension(c: &mut Certificate, oid: &ObjectIdentifier, value: &[u8]) -> ASN1Result<()> {
    match oid.components().as_slice() {
        SUBJECT_ALT_NAME => {
            c.sans = yasna::parse_ber(value, |r| {
                r.collect_sequence_of(|r| {
                    let name = r.read_tagged_der()?;
                    Ok(match (name.tag().tag_number, name.value()) {
                        (2, dns) => format!("DNS:{}", String::from_utf8_lossy(dns)),
                        (7, ip) => format!("IP:{}", super::read::ip_text(ip)),
                        (n, _) => format!("GeneralName[{n}]"),
                    })
                })
            })?
        }
        KEY_USAGE => {
            let (bytes, len) = yasna::parse_ber(value, |r| r.read_bitvec_bytes())?;
            let bit = |i: usize| i < len && bytes.get(i / 8).is_some_and(|b| b & (0x80 >> (i % 8)) != 0);
            c.key_usage = Some(KeyUsage {
                digital_signature: bit(0),
                key_encipherment: bit(2),
                key_cert_sign: bit(5),
                crl_sign: bit(6),
            });
        }
        EXTENDED_KEY_USAGE => {
            c.extended_key_usage = yasna::parse_ber(value, |r| {
                r.collect_sequence_of(|r| Ok(r.read_oid()?.components().clone()))
            })?
        }
        BASIC_CONSTRAINTS => {
            let (ca, path_len) = yasna::parse_ber(value, |r| {
                r.read_sequence(|r| {
                    let ca = r.read_default(false, |r| r.read_bool())?;
                    let path_len = r.read_optional(|r| r.read_u64())?;
                    Ok((ca, path_len))
                })
            })?;
            c.ca = ca.then_some(path_len);
        }
        SUBJECT_KEY_ID => c.subject_key_id = Some(yasna::parse_ber(value, |r| r.read_bytes())?),
        _ => {}
    }
    Ok(())
}

fn name(r: BERReader) -> ASN1Result<Name> {
    let mut attributes = Vec::new();
    r.read_sequence_of(|r| {
        r.read_set_of(|r| {
            attributes.push(r.read_sequence(|r| {
                let oid = r.next().read_oid()?.components().clone();
                let value = r.next().read_tagged_der()?;
                Ok(Attribute {
                    oid,
                    tag: value.tag().tag_number,
                    bytes: value.value().to_vec(),
                })
            })?);
            Ok(())
        })
    })?;
    Ok(Name(attributes))
}

/// UTCTime or GeneralizedTime, as Unix seconds.
fn time(r: BERReader) -> ASN1Result<i64> {
    let t = match r.lookahead_tag()? {
        yasna::tags::TAG_UTCTIME => *r.read_utctime()?.datetime(),
        yasna::tags::TAG_GENERALIZEDTIME => *r.read_generalized_time()?.datetime(),
        _ => return Err(ASN1Error::new(ASN1ErrorKind::Invalid)),
    };
    Ok(t.unix_timestamp())
}

impl Attribute {
    fn text(&self) -> String {
        match self.tag {
            // BMPString: UTF-16 big-endian.
            30 => {
                let units: Vec<u16> = self
                    .bytes
                    .chunks(2)
                    .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
                    .collect();
                String::from_utf16_lossy(&units)
            }
            _ => String::from_utf8_lossy(&self.bytes).into_owned(),
        }
    }
}

/// `CN=..., O=...`, in the certificate's order.
impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, a) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match SHORT_NAMES.iter().find(|(oid, _)| *oid == a.oid.as_slice()) {
                Some((_, short)) => write!(f, "{short}={}", a.text())?,
                None => {
                    let dotted: Vec<String> = a.oid.iter().map(u64::to_string).collect();
                    write!(f, "{}={}", dotted.join("."), a.text())?
                }
            }
        }
        Ok(())
    }
}

impl Certificate {
    /// What rcgen needs to sign with this certificate as the issuer: its name (each value
    /// in its own string type), its key identifier and its key usages.
    pub fn issuer_params(&self) -> anyhow::Result<rcgen::CertificateParams> {
        let mut params = rcgen::CertificateParams::default();
        let mut dn = DistinguishedName::new();
        for (i, a) in self.subject.0.iter().enumerate() {
            // rcgen keeps one value per attribute type.
            if self.subject.0[..i].iter().any(|b| b.oid == a.oid) {
                anyhow::bail!(
                    "its name ({}) repeats an attribute, which rcgen cannot write",
                    self.subject
                );
            }
            let ty = match a.oid.as_slice() {
                [2, 5, 4, 3] => DnType::CommonName,
                [2, 5, 4, 6] => DnType::CountryName,
                [2, 5, 4, 7] => DnType::LocalityName,
                [2, 5, 4, 8] => DnType::StateOrProvinceName,
                [2, 5, 4, 10] => DnType::OrganizationName,
                [2, 5, 4, 11] => DnType::OrganizationalUnitName,
                other => DnType::CustomDnType(other.to_vec()),
            };
            let value = match a.tag {
                19 => DnValue::PrintableString(a.text().try_into()?),
                22 => DnValue::Ia5String(a.text().try_into()?),
                20 => DnValue::TeletexString(a.text().try_into()?),
                30 => DnValue::BmpString(rcgen::string::BmpString::from_utf16be(a.bytes.clone())?),
                28 => DnValue::UniversalString(rcgen::string::UniversalString::from_utf32be(a.bytes.clone())?),
                _ => DnValue::Utf8String(a.text()),
            };
            dn.push(ty, value);
        }
        params.distinguished_name = dn;
        if let Some(id) = &self.subject_key_id {
            params.key_identifier_method = KeyIdMethod::PreSpecified(id.clone());
        }
        if let Some(ku) = self.key_usage {
            for (on, purpose) in [
                (ku.digital_signature, KeyUsagePurpose::DigitalSignature),
                (ku.key_encipherment, KeyUsagePurpose::KeyEncipherment),
                (ku.key_cert_sign, KeyUsagePurpose::KeyCertSign),
                (ku.crl_sign, KeyUsagePurpose::CrlSign),
            ] {
                if on {
                    params.key_usages.push(purpose);
                }
            }
        }
        params.is_ca = match self.ca {
            Some(Some(n)) => IsCa::Ca(BasicConstraints::Constrained(n.min(u8::MAX.into()) as u8)),
            Some(None) => IsCa::Ca(BasicConstraints::Unconstrained),
            None => IsCa::ExplicitNoCa,
        };
        Ok(params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every certificate of the host's CA bundle (other tools' encodings, PrintableString
    /// and BMPString names among them) is read, and signing as any of them writes its
    /// name into the leaf byte for byte, as chaining needs.
    #[test]
    fn the_host_bundle_reads_back_and_its_names_sign_byte_for_byte() {
        let bundle = std::fs::read_to_string("/etc/ssl/certs/ca-certificates.crt").unwrap();
        let blocks = pem::parse_many(&bundle).unwrap();
        assert!(blocks.len() > 50, "{} certificates in the host bundle", blocks.len());
        assert_eq!(super::super::count_pem_certificates(bundle.as_bytes()), blocks.len());
        let (mut printable, mut refused) = (0, 0);
        for block in &blocks {
            let ca = parse(block.contents()).unwrap();
            assert!(ca.ca.is_some(), "{} is not a CA", ca.subject);
            assert!(ca.not_before < ca.not_after, "{}", ca.subject);
            printable += ca.subject.0.iter().filter(|a| a.tag == 19).count();
            let Ok(params) = ca.issuer_params() else {
                // A name with one attribute type twice, which rcgen cannot write.
                let mut oids: Vec<_> = ca.subject.0.iter().map(|a| &a.oid).collect();
                oids.sort();
                oids.dedup();
                assert!(oids.len() < ca.subject.0.len(), "{}", ca.subject);
                refused += 1;
                continue;
            };
            let key = rcgen::KeyPair::generate().unwrap();
            let issuer = rcgen::Issuer::new(params, &key);
            let leaf_key = rcgen::KeyPair::generate().unwrap();
            let leaf = rcgen::CertificateParams::new(vec!["leaf.test".to_string()])
                .unwrap()
                .signed_by(&leaf_key, &issuer)
                .unwrap();
            let leaf = parse(leaf.der()).unwrap();
            assert_eq!(leaf.issuer, ca.subject);
            assert_eq!(leaf.sans, ["DNS:leaf.test"]);
            if let Some(id) = &ca.subject_key_id {
                assert!(leaf.subject_key_id.as_ref() != Some(id));
            }
        }
        assert!(printable > 0, "no PrintableString names were tried");
        assert!(refused < blocks.len() / 10, "{refused} names refused");
    }

    #[test]
    fn damaged_bytes_are_an_error_not_a_panic() {
        let bundle = std::fs::read_to_string("/etc/ssl/certs/ca-certificates.crt").unwrap();
        let der = pem::parse(&bundle).unwrap().into_contents();
        for cut in [0, 1, 10, der.len() / 2, der.len() - 1] {
            assert!(parse(&der[..cut]).is_err(), "cut at {cut}");
        }
        let mut flipped = der.clone();
        flipped[1] ^= 0x7f;
        assert!(parse(&flipped).is_err());
    }
}

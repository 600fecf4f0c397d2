//! Salesforce Outbound Messages: the SOAP 1.1 `notifications` call a workflow rule or
//! flow sends, read without any DTD or external entity, within depth and count bounds.
//!
//! A message names its organization and action and carries up to 100 `Notification`s,
//! each an id (what Salesforce retries by, for 24 hours, possibly out of order and twice)
//! and an `sObject` with the fields chosen for the message. The `SessionId` a message may
//! carry is a live session: it is never kept.

use serde_json::{Map, Value};

use quick_xml::NsReader;
use quick_xml::events::Event;
use quick_xml::name::{Namespace, ResolveResult};

/// The SOAP 1.1 envelope namespace.
pub const SOAP_ENV: &str = "http://schemas.xmlsoap.org/soap/envelope/";
/// The namespace of the outbound messaging call.
pub const OUTBOUND: &str = "http://soap.sforce.com/2005/09/outbound";
/// The XML Schema instance namespace (`xsi:nil`, `xsi:type`).
const XSI: &str = "http://www.w3.org/2001/XMLSchema-instance";

/// Notifications in one message, at most (the outbound messaging WSDL's `maxOccurs`).
pub const MAX_NOTIFICATIONS: usize = 100;
/// Element nesting, at most: envelope, body, notifications, notification, sObject,
/// field — and two to spare.
pub const MAX_DEPTH: usize = 8;

/// The acknowledgement Salesforce waits for; anything else makes it send again.
pub const ACK: &str = concat!(
    r#"<?xml version="1.0" encoding="UTF-8"?>"#,
    r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">"#,
    r#"<soapenv:Body><notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound">"#,
    r#"<Ack>true</Ack></notificationsResponse></soapenv:Body></soapenv:Envelope>"#
);

/// An outbound message, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundMessage {
    /// The sending organization's id.
    pub organization_id: String,
    /// The workflow action that sent it.
    pub action_id: String,
    /// The enterprise API URL for calls back, if sent.
    pub enterprise_url: Option<String>,
    /// The partner API URL for calls back, if sent.
    pub partner_url: Option<String>,
    /// The notifications, in message order.
    pub notifications: Vec<Notification>,
}

/// One notification of an outbound message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The notification's id: the same on every retry of it.
    pub id: String,
    /// The sObject's type (`Case`, `Account`, `Design_Registration__c` …).
    pub sobject_type: String,
    /// The sObject's fields as sent: text, or null for `xsi:nil`.
    pub fields: Map<String, Value>,
}

impl Notification {
    /// The sObject as JSON: `{"type": …, fields…}`.
    pub fn sobject_json(&self) -> Value {
        let mut object = Map::with_capacity(self.fields.len() + 1);
        object.insert("type".into(), Value::String(self.sobject_type.clone()));
        for (k, v) in &self.fields {
            object.insert(k.clone(), v.clone());
        }
        Value::Object(object)
    }
}

/// Where a message was refused, and why (never quoting a `SessionId`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn err(message: impl Into<String>) -> ParseError {
    ParseError(message.into())
}

/// Where the reader is in the message.
#[derive(Debug, Clone, PartialEq)]
enum Place {
    Envelope,
    Header,
    Body,
    Notifications,
    /// A child of `notifications` whose text is kept (`OrganizationId` …).
    Header4(&'static str),
    /// `SessionId`: its text is dropped.
    Session,
    Notification,
    NotificationId,
    SObject,
    /// A field of the sObject; null when `xsi:nil="true"`.
    Field {
        name: String,
        nil: bool,
    },
    /// Anything else: skipped whole.
    Skip,
}

/// Read an outbound message. Refused: a DTD (so no entity can be declared, let alone
/// fetched), an entity other than XML's five and character references, nesting deeper
/// than [`MAX_DEPTH`], more than [`MAX_NOTIFICATIONS`] notifications, anything but a
/// SOAP envelope around one `notifications` call, and a message without its
/// organization, action or a notification's id.
///
/// ```
/// use moodbridge_ops::outbound::parse;
/// let xml = r#"<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/"><soapenv:Body>
///   <notifications xmlns="http://soap.sforce.com/2005/09/outbound">
///     <OrganizationId>00D000000000001AAA</OrganizationId><ActionId>04k000000000001AAA</ActionId>
///     <Notification><Id>04l000000000001AAA</Id>
///       <sObject xsi:type="sf:Case" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
///                xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
///         <sf:Id>500000000000001AAA</sf:Id><sf:Subject>Filing &amp; review</sf:Subject>
///       </sObject></Notification>
///   </notifications></soapenv:Body></soapenv:Envelope>"#;
/// let message = parse(xml).unwrap();
/// assert_eq!(message.notifications[0].sobject_type, "Case");
/// assert_eq!(message.notifications[0].fields["Subject"], "Filing & review");
/// assert!(parse("<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><x>&e;</x>").is_err());
/// ```
pub fn parse(xml: &str) -> Result<OutboundMessage, ParseError> {
    let mut reader = NsReader::from_str(xml);
    let mut stack: Vec<Place> = Vec::new();
    let mut text = String::new();
    let mut got = Collected::default();
    let mut calls = 0;
    let mut saw_envelope = false;
    loop {
        let (ns, event) = reader
            .read_resolved_event()
            .map_err(|e| err(format!("not well-formed XML: {e}")))?;
        match event {
            Event::DocType(_) => return Err(err("a DTD is not accepted in an outbound message")),
            Event::Start(start) | Event::Empty(start) if stack.len() >= MAX_DEPTH => {
                let _ = start;
                return Err(err(format!("elements nest deeper than {MAX_DEPTH}")));
            }
            Event::Start(ref start) | Event::Empty(ref start) => {
                let empty = matches!(event, Event::Empty(_));
                let local = String::from_utf8_lossy(start.local_name().as_ref()).into_owned();
                let in_ns = |uri: &str| matches!(ns, ResolveResult::Bound(Namespace(n)) if n == uri.as_bytes());
                let parent = stack.last();
                let place = match (parent, local.as_str()) {
                    (None, "Envelope") if in_ns(SOAP_ENV) => {
                        saw_envelope = true;
                        Place::Envelope
                    }
                    (None, _) => return Err(err("the message is not a SOAP 1.1 envelope")),
                    (Some(Place::Envelope), "Header") if in_ns(SOAP_ENV) => Place::Header,
                    (Some(Place::Envelope), "Body") if in_ns(SOAP_ENV) => Place::Body,
                    (Some(Place::Body), "notifications") if in_ns(OUTBOUND) => {
                        calls += 1;
                        if calls > 1 {
                            return Err(err("the body holds more than one notifications call"));
                        }
                        Place::Notifications
                    }
                    (Some(Place::Body), other) => {
                        return Err(err(format!(
                            "the body holds {other}, not an outbound messaging notifications call"
                        )));
                    }
                    (Some(Place::Notifications), "OrganizationId") => {
                        Place::Header4("OrganizationId")
                    }
                    (Some(Place::Notifications), "ActionId") => Place::Header4("ActionId"),
                    (Some(Place::Notifications), "EnterpriseUrl") => {
                        Place::Header4("EnterpriseUrl")
                    }
                    (Some(Place::Notifications), "PartnerUrl") => Place::Header4("PartnerUrl"),
                    (Some(Place::Notifications), "SessionId") => Place::Session,
                    (Some(Place::Notifications), "Notification") => {
                        if got.notifications.len() >= MAX_NOTIFICATIONS {
                            return Err(err(format!(
                                "more than {MAX_NOTIFICATIONS} notifications in one message"
                            )));
                        }
                        got.current = Some(Notification {
                            id: String::new(),
                            sobject_type: String::new(),
                            fields: Map::new(),
                        });
                        Place::Notification
                    }
                    (Some(Place::Notification), "Id") => Place::NotificationId,
                    (Some(Place::Notification), "sObject") => {
                        let ty = xsi_attribute(&reader, start, "type")?.unwrap_or_default();
                        // `sf:Case` → `Case`.
                        let ty = ty.rsplit(':').next().unwrap_or_default().to_owned();
                        if let Some(n) = got.current.as_mut() {
                            n.sobject_type = ty;
                        }
                        Place::SObject
                    }
                    (Some(Place::SObject), _) => Place::Field {
                        nil: xsi_attribute(&reader, start, "nil")?.as_deref() == Some("true"),
                        name: local,
                    },
                    _ => Place::Skip,
                };
                text.clear();
                stack.push(place);
                if empty {
                    got.close(&mut stack, &mut text)?;
                }
            }
            Event::End(_) => got.close(&mut stack, &mut text)?,
            Event::Text(t) if stack.is_empty() => {
                if !t.iter().all(u8::is_ascii_whitespace) {
                    return Err(err(
                        "text outside any element: the message is not a SOAP 1.1 envelope",
                    ));
                }
            }
            Event::Text(t) => {
                if !matches!(stack.last(), Some(Place::Session)) {
                    let t = t
                        .xml_content(quick_xml::XmlVersion::Implicit1_0)
                        .map_err(|e| err(format!("text that is not UTF-8: {e}")))?;
                    text.push_str(&t);
                }
            }
            Event::CData(t) => {
                if !matches!(stack.last(), Some(Place::Session)) {
                    let t = t
                        .decode()
                        .map_err(|e| err(format!("text that is not UTF-8: {e}")))?;
                    text.push_str(&t);
                }
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c,
                    Ok(None) => match &*r {
                        b"amp" => '&',
                        b"lt" => '<',
                        b"gt" => '>',
                        b"quot" => '"',
                        b"apos" => '\'',
                        other => {
                            return Err(err(format!(
                                "the entity &{}; is not XML's own; declared entities are not accepted",
                                String::from_utf8_lossy(other)
                            )));
                        }
                    },
                    Err(e) => return Err(err(format!("a bad character reference: {e}"))),
                };
                if !matches!(stack.last(), Some(Place::Session)) {
                    text.push(resolved);
                }
            }
            Event::Eof => break,
            Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
        }
    }
    if !stack.is_empty() {
        return Err(err("the message ends before its envelope closes"));
    }
    if calls == 0 {
        return Err(err(if saw_envelope {
            "the body holds no notifications call"
        } else {
            "the message is not a SOAP 1.1 envelope around a notifications call"
        }));
    }
    Ok(OutboundMessage {
        organization_id: got
            .org
            .ok_or_else(|| err("the message has no OrganizationId"))?,
        action_id: got
            .action
            .ok_or_else(|| err("the message has no ActionId"))?,
        enterprise_url: got.enterprise,
        partner_url: got.partner,
        notifications: got.notifications,
    })
}

/// The value of attribute `xsi:<name>` of `start`, if present.
fn xsi_attribute(
    reader: &NsReader<&[u8]>,
    start: &quick_xml::events::BytesStart<'_>,
    name: &str,
) -> Result<Option<String>, ParseError> {
    for attribute in start.attributes() {
        let attribute = attribute.map_err(|e| err(format!("a malformed attribute: {e}")))?;
        let (ns, local) = reader.resolver().resolve_attribute(attribute.key);
        let is_xsi = matches!(ns, ResolveResult::Bound(Namespace(n)) if n == XSI.as_bytes());
        if is_xsi && local.as_ref() == name.as_bytes() {
            let value = attribute
                .decoded_and_normalized_value(quick_xml::XmlVersion::Implicit1_0, reader.decoder())
                .map_err(|e| err(format!("a malformed attribute value: {e}")))?;
            return Ok(Some(value.into_owned()));
        }
    }
    Ok(None)
}

/// What the parser has read so far.
#[derive(Default)]
struct Collected {
    org: Option<String>,
    action: Option<String>,
    enterprise: Option<String>,
    partner: Option<String>,
    /// The notification being read.
    current: Option<Notification>,
    notifications: Vec<Notification>,
}

impl Collected {
    /// Close the innermost element: keep what it held.
    fn close(&mut self, stack: &mut Vec<Place>, text: &mut String) -> Result<(), ParseError> {
        let place = stack
            .pop()
            .ok_or_else(|| err("an end tag without its start"))?;
        let value = std::mem::take(text).trim().to_owned();
        match place {
            Place::Header4("OrganizationId") => self.org = Some(value),
            Place::Header4("ActionId") => self.action = Some(value),
            Place::Header4("EnterpriseUrl") => self.enterprise = Some(value),
            Place::Header4("PartnerUrl") => self.partner = Some(value),
            Place::NotificationId => {
                if let Some(n) = self.current.as_mut() {
                    n.id = value;
                }
            }
            Place::Field { name, nil } => {
                if let Some(n) = self.current.as_mut() {
                    let v = if nil {
                        Value::Null
                    } else {
                        Value::String(value)
                    };
                    n.fields.insert(name, v);
                }
            }
            Place::Notification => {
                let n = self
                    .current
                    .take()
                    .ok_or_else(|| err("a Notification closed twice"))?;
                if n.id.is_empty() {
                    return Err(err("a Notification has no Id"));
                }
                self.notifications.push(n);
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An outbound message as Salesforce sent it, published in "Using Salesforce
    /// outbound SOAP messages with PHP" (mikesimonds.com), ids as published.
    const PUBLISHED: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<soapenv:Body>
<notifications xmlns="http://soap.sforce.com/2005/09/outbound">
<OrganizationId>00DR......</OrganizationId>
<ActionId>04kR00000004CCXIA2</ActionId>
<SessionId xsi:nil="true"/>
<EnterpriseUrl>https://cs2-api.salesforce.com/services/Soap/c/8.0/4e1300DR00000000XcD</EnterpriseUrl>
<PartnerUrl>https://cs2-api.salesforce.com/services/Soap/u/8.0/4e1300DR00000000XcD</PartnerUrl>
<Notification>
<Id>04lR0000000CcIFIA0</Id>
<sObject xsi:type="sf:Design_Registration__c" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">
<sf:Id>a06R00000009QZaIAM</sf:Id>
<sf:BU_Reviewer_Lookup__c>00540000000lnc2AAA</sf:BU_Reviewer_Lookup__c>
<sf:DP_cust_eng_email__c>me@email.com</sf:DP_cust_eng_email__c>
<sf:DP_reg_id__c>JXD08-7CLLB7</sf:DP_reg_id__c>
<sf:DR_Number__c>R080500453</sf:DR_Number__c>
<sf:Field_reviewer_lookup__c>00540000000yHbGAAU</sf:Field_reviewer_lookup__c>
<sf:Name>URT</sf:Name>
<sf:OwnerId>00540000000mBqsAAE</sf:OwnerId>
</sObject>
</Notification>
</notifications>
</soapenv:Body>
</soapenv:Envelope>"#;

    #[test]
    fn the_published_message_reads_whole() {
        let m = parse(PUBLISHED).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.organization_id, "00DR......");
        assert_eq!(m.action_id, "04kR00000004CCXIA2");
        assert_eq!(
            m.partner_url.as_deref(),
            Some("https://cs2-api.salesforce.com/services/Soap/u/8.0/4e1300DR00000000XcD")
        );
        assert_eq!(m.notifications.len(), 1);
        let n = &m.notifications[0];
        assert_eq!(n.id, "04lR0000000CcIFIA0");
        assert_eq!(n.sobject_type, "Design_Registration__c");
        assert_eq!(n.fields.len(), 8);
        assert_eq!(n.fields["Id"], "a06R00000009QZaIAM");
        assert_eq!(n.fields["DP_cust_eng_email__c"], "me@email.com");
        assert_eq!(n.fields["OwnerId"], "00540000000mBqsAAE");
    }

    fn with_session(session: &str) -> String {
        PUBLISHED.replace(
            r#"<SessionId xsi:nil="true"/>"#,
            &format!("<SessionId>{session}</SessionId>"),
        )
    }

    #[test]
    fn a_session_id_is_never_kept() {
        let m = parse(&with_session("00DR0000000!AQ0AQSecretSessionToken"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(!format!("{m:?}").contains("SecretSessionToken"));
    }

    #[test]
    fn what_is_refused_says_why() {
        let cases: Vec<(String, &str)> = vec![
            (
                format!("<!DOCTYPE e [<!ENTITY x SYSTEM \"file:///etc/passwd\">]>{PUBLISHED}"),
                "DTD",
            ),
            (
                PUBLISHED.replace("<sf:Name>URT</sf:Name>", "<sf:Name>&x;</sf:Name>"),
                "&x;",
            ),
            (
                PUBLISHED.replace(
                    "<sf:Name>URT</sf:Name>",
                    "<sf:Name><a><b><c><d>deep</d></c></b></a></sf:Name>",
                ),
                "deeper",
            ),
            (
                PUBLISHED.replace("<Id>04lR0000000CcIFIA0</Id>", ""),
                "no Id",
            ),
            (
                PUBLISHED.replace("<ActionId>04kR00000004CCXIA2</ActionId>", ""),
                "no ActionId",
            ),
            (
                PUBLISHED.replace("</soapenv:Envelope>", ""),
                "ends before its envelope closes",
            ),
            (
                PUBLISHED.replace("</sf:Name>", "</sf:Nam>"),
                "not well-formed XML",
            ),
            ("<notifications/>".to_owned(), "not a SOAP"),
            (
                PUBLISHED.replace("http://soap.sforce.com/2005/09/outbound", "urn:other"),
                "not an outbound messaging",
            ),
            (
                {
                    let one = &PUBLISHED[PUBLISHED.find("<Notification>").unwrap_or(0)
                        ..PUBLISHED.find("</Notification>").unwrap_or(0) + "</Notification>".len()];
                    PUBLISHED.replace(one, &one.repeat(101))
                },
                "more than 100",
            ),
        ];
        for (xml, says) in cases {
            let e = parse(&xml).expect_err(says);
            assert!(e.0.contains(says), "{says:?} not in {e}");
        }
        // A secret in a refused message is not quoted back.
        let e = parse(&with_session("SecretSessionToken&bad;")).expect_err("entity");
        assert!(!e.0.contains("SecretSessionToken"), "{e}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig {
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x736f_6170),
            cases: 512,
            ..Default::default()
        })]

        /// Whatever bytes arrive, the parser answers (no panic); a cut or spliced
        /// message is read whole or refused.
        #[test]
        fn any_input_is_answered(
            cut in 0usize..PUBLISHED.len(),
            junk in "[<>&;/a-z:=\"! \\[\\]]{0,40}",
        ) {
            let at = (0..=cut).rev().find(|&i| PUBLISHED.is_char_boundary(i)).unwrap_or(0);
            let _ = parse(&PUBLISHED[..at]);
            let spliced = format!("{}{junk}{}", &PUBLISHED[..at], &PUBLISHED[at..]);
            if let Ok(m) = parse(&spliced) {
                proptest::prop_assert!(m.notifications.len() <= MAX_NOTIFICATIONS);
            }
            let _ = parse(&junk);
        }
    }
}

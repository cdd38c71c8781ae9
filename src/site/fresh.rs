//! Freshness without a clock (SPEC.md §17.5): a release manifest may carry `expires`;
//! the home keeps the newest signed time it has accepted (every installed manifest's
//! and applied pack's `created`), which only grows; a release whose `expires` is before
//! that time is refused. The site's own clock is never consulted, so a clock far in the
//! future cannot lock a site out and a clock in the past cannot let a frozen release in.
//!
//! The policy (`refuse`, or `warn`: install with a warning) comes from the home's signed
//! trust root ([`crate::trustroot`], SPEC.md §19); a home without a root refuses.
//!
//! Known gap: a site that has never seen anything newer than an expired release still
//! accepts it (it cannot know better without a clock).

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::manifest::Manifest;
use crate::update::UpdateError;

/// An RFC 3339 time, if it is one.
pub fn parse(t: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(t, &Rfc3339).ok()
}

/// The later of the newest time seen so far and `t` (times that do not parse are
/// ignored, so a bad value never moves the record).
pub fn newest(seen: Option<&str>, t: &str) -> Option<String> {
    match (seen.and_then(parse), parse(t)) {
        (Some(a), Some(b)) if b > a => Some(t.to_owned()),
        (Some(_), _) => seen.map(str::to_owned),
        (None, Some(_)) => Some(t.to_owned()),
        (None, None) => None,
    }
}

/// Refuses `m` when it expires before the newest signed time this home has seen
/// (including its own `created`).
pub fn check(seen: Option<&str>, m: &Manifest) -> Result<(), UpdateError> {
    let Some(exp) = m.expires.as_deref() else {
        return Ok(());
    };
    let Some(expires) = parse(exp) else {
        return Ok(()); // the manifest parser refuses a bad `expires`
    };
    let Some(newest_text) = newest(seen, &m.created) else {
        return Ok(());
    };
    match parse(&newest_text) {
        Some(n) if n > expires => Err(UpdateError::Expired {
            release: m.release.to_string(),
            expires: exp.to_owned(),
            newest: newest_text,
        }),
        _ => Ok(()),
    }
}

/// [`check`] under the home's expiry policy: with `warn` an expired release passes and
/// the refusal's first line comes back as a warning.
pub fn check_policy(
    seen: Option<&str>,
    m: &Manifest,
    policy: crate::trustroot::ExpiryPolicy,
) -> Result<Option<String>, UpdateError> {
    match check(seen, m) {
        Ok(()) => Ok(None),
        Err(e @ UpdateError::Expired { .. }) if policy == crate::trustroot::ExpiryPolicy::Warn => {
            let text = e.to_string();
            Ok(Some(format!(
                "{} (installed anyway: the trust root's expiry policy is 'warn')",
                text.lines().next().unwrap_or_default()
            )))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_only_grows() {
        let a = "2026-11-01T00:00:00Z";
        let b = "2026-12-01T00:00:00Z";
        assert_eq!(newest(None, a).as_deref(), Some(a));
        assert_eq!(newest(Some(a), b).as_deref(), Some(b));
        assert_eq!(newest(Some(b), a).as_deref(), Some(b));
        assert_eq!(newest(Some(b), "garbage").as_deref(), Some(b));
        assert_eq!(newest(None, "garbage"), None);
    }
}

//! What one check says: the consensus of the upstreams, and every way
//! two answers differ.

use std::collections::BTreeSet;

use super::ChangeKind;
use crate::dns::{Answer, Observation};
use crate::provider::Providers;

/// The one answer a check settles on, from all upstreams.
#[derive(Debug, Clone, PartialEq)]
pub struct Consensus {
    /// `None` when every upstream failed.
    pub answer: Option<Answer>,
    pub ttl: Option<u32>,
    /// `upstream: answer` for each upstream when definitive answers differ.
    pub disagreement: Option<String>,
}

/// The majority of the definitive answers; a tie goes to the upstream listed
/// first. Failures do not vote.
pub fn consensus(observations: &[Observation]) -> Consensus {
    let answers: Vec<(usize, Answer)> = observations
        .iter()
        .enumerate()
        .filter_map(|(i, o)| o.answer().map(|a| (i, a)))
        .collect();
    let mut best: Option<(&Answer, usize)> = None;
    for (_, a) in &answers {
        let votes = answers.iter().filter(|(_, b)| b == a).count();
        if best.is_none_or(|(_, v)| votes > v) {
            best = Some((a, votes));
        }
    }
    let Some((answer, _)) = best else {
        return Consensus {
            answer: None,
            ttl: None,
            disagreement: None,
        };
    };
    let ttl = answers
        .iter()
        .filter(|(_, a)| a == answer)
        .filter_map(|(i, _)| observations[*i].ttl)
        .max();
    let distinct: BTreeSet<&Answer> = answers.iter().map(|(_, a)| a).collect();
    let disagreement = (distinct.len() > 1).then(|| {
        answers
            .iter()
            .map(|(i, a)| format!("{}: {a}", observations[*i].upstream))
            .collect::<Vec<_>>()
            .join("; ")
    });
    Consensus {
        answer: Some(answer.clone()),
        ttl,
        disagreement,
    }
}

/// Compares two answers and names every way they differ.
pub fn classify(
    before: &Answer,
    after: &Answer,
    providers: &Providers,
) -> Vec<(ChangeKind, String)> {
    use Answer::*;
    let mut out = Vec::new();
    match (before, after) {
        (Records(a), Records(b)) => {
            let hosts = |s: &[crate::domain::Mx]| {
                s.iter()
                    .map(|m| m.exchange.clone())
                    .collect::<BTreeSet<_>>()
            };
            let (ha, hb) = (hosts(a), hosts(b));
            let added: Vec<String> = hb.difference(&ha).map(|h| h.to_string()).collect();
            let removed: Vec<String> = ha.difference(&hb).map(|h| h.to_string()).collect();
            if !added.is_empty() {
                out.push((
                    ChangeKind::HostsAdded,
                    format!("added {}", added.join(", ")),
                ));
            }
            if !removed.is_empty() {
                out.push((
                    ChangeKind::HostsRemoved,
                    format!("removed {}", removed.join(", ")),
                ));
            }
            let repref: Vec<String> = a
                .iter()
                .filter_map(|m| {
                    b.iter()
                        .find(|n| n.exchange == m.exchange && n.preference != m.preference)
                        .map(|n| format!("{} {}→{}", m.exchange, m.preference, n.preference))
                })
                .collect();
            if !repref.is_empty() {
                out.push((ChangeKind::PreferenceChanged, repref.join(", ")));
            }
            let (pa, pb) = (providers.of_set(a), providers.of_set(b));
            if pa != pb {
                let show = |s: &BTreeSet<String>| {
                    s.iter()
                        .map(|p| providers.display_name(p).to_string())
                        .collect::<Vec<_>>()
                        .join(" + ")
                };
                out.push((
                    ChangeKind::ProviderChanged,
                    format!("provider {} → {}", show(&pa), show(&pb)),
                ));
            }
        }
        (_, Records(b)) => out.push((
            ChangeKind::MxAppeared,
            format!("MX now {}", Records(b.clone())),
        )),
        (_, NoMx) => out.push((
            ChangeKind::MxRemoved,
            format!("no MX any more (was {before})"),
        )),
        (_, NullMx) => out.push((
            ChangeKind::NullMx,
            format!("null MX: accepts no mail (was {before})"),
        )),
        (_, NxDomain) => out.push((
            ChangeKind::Nxdomain,
            format!("domain does not exist (was {before})"),
        )),
    }
    out
}

/// Whether the answer's providers are among those expected; if not, how.
pub(crate) fn unexpected(
    answer: &Answer,
    expect: &[String],
    providers: &Providers,
) -> Option<String> {
    if expect.is_empty() || answer.mx().is_empty() {
        return None;
    }
    let got = providers.of_set(answer.mx());
    let bad: Vec<&String> = got.iter().filter(|p| !expect.contains(p)).collect();
    (!bad.is_empty()).then(|| {
        format!(
            "served by {} but expected {}",
            bad.iter()
                .map(|p| providers.display_name(p))
                .collect::<Vec<_>>()
                .join(" + "),
            expect.join(", ")
        )
    })
}

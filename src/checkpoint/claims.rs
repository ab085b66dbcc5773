//! The group's claims on its partitions: which checkpoint last committed each one. In the
//! parquet format this is the commit point that fences processors (docs/EXACTLY_ONCE.md,
//! "Fencing"): a checkpoint is committed once the claims name it, and a processor may name
//! its checkpoint only for partitions whose claim is still the one it last knew. Pure;
//! `commit::Manifests` keeps the claims in one object and replaces it only where unchanged.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Manifest;
use crate::record::Partition;

/// Per partition, the checkpoint that last committed it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub partitions: BTreeMap<Partition, Claim>,
}

/// A checkpoint, by its writer and epoch (which name its manifest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    pub member: String,
    pub epoch: u64,
}

impl Claim {
    pub fn of(manifest: &Manifest) -> Self {
        Claim {
            member: manifest.member.clone(),
            epoch: manifest.epoch,
        }
    }

    fn names(&self, manifest: &Manifest) -> bool {
        self.epoch == manifest.epoch && self.member == manifest.member
    }
}

/// A partition another checkpoint claimed since the processor last knew its claim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taken {
    pub partition: Partition,
    pub found: Option<Claim>,
    pub known: Option<Claim>,
}

impl Claims {
    /// The claims of a group whose checkpoints were written before claims were kept: each
    /// partition claimed by the highest-epoch manifest holding it, as recovery then read them.
    pub fn before_claims(manifests: &[Manifest]) -> Self {
        let mut claims = Claims::default();
        for manifest in manifests {
            for &partition in manifest.partitions.keys() {
                let claim = claims
                    .partitions
                    .entry(partition)
                    .or_insert_with(|| Claim::of(manifest));
                if manifest.epoch > claim.epoch {
                    *claim = Claim::of(manifest);
                }
            }
        }
        claims
    }

    /// Whether `manifest` is a committed checkpoint that recovery may resume from: a claim
    /// names it. Any other was superseded, or is being committed, or never will be (its
    /// writer was fenced).
    pub fn names(&self, manifest: &Manifest) -> bool {
        self.partitions.values().any(|c| c.names(manifest))
    }

    /// Whether `manifest` is committed for every partition it holds: a commit whose answer
    /// was lost finds itself so.
    pub fn hold(&self, manifest: &Manifest) -> bool {
        manifest
            .partitions
            .keys()
            .all(|p| self.partitions.get(p).is_some_and(|c| c.names(manifest)))
    }

    /// Claims every partition of `manifest` for it, where each claim is still what the
    /// committing processor last `known` it to be (absent: none). Otherwise another
    /// checkpoint committed the partition since: nothing changes, and the processor no
    /// longer owns it.
    pub fn commit(
        &mut self,
        manifest: &Manifest,
        known: &BTreeMap<Partition, Claim>,
    ) -> Result<(), Taken> {
        for &partition in manifest.partitions.keys() {
            let found = self.partitions.get(&partition);
            if found != known.get(&partition) {
                return Err(Taken {
                    partition,
                    found: found.cloned(),
                    known: known.get(&partition).cloned(),
                });
            }
        }
        for &partition in manifest.partitions.keys() {
            self.partitions.insert(partition, Claim::of(manifest));
        }
        Ok(())
    }

    /// Checkpoints that no recovery can pick and no processor can still commit: no claim
    /// names them, and each of their partitions is claimed by a later checkpoint. One being
    /// committed holds a partition whose claim is older (its writer's last) or absent.
    pub fn dead(&self, manifest: &Manifest) -> bool {
        !self.names(manifest)
            && manifest.partitions.keys().all(|p| {
                self.partitions
                    .get(p)
                    .is_some_and(|c| c.epoch > manifest.epoch)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn known(claims: &Claims) -> BTreeMap<Partition, Claim> {
        claims.partitions.clone()
    }

    #[test]
    fn a_group_without_claims_is_claimed_as_its_newest_manifests_say() {
        let old = Manifest::sample(3, "a", &[(0, 5), (1, 5)]);
        let newer = Manifest::sample(4, "b", &[(1, 9)]);
        let claims = Claims::before_claims(&[newer.clone(), old.clone()]);
        assert_eq!(claims.partitions[&0], Claim::of(&old));
        assert_eq!(claims.partitions[&1], Claim::of(&newer));
        assert!(claims.names(&old) && claims.names(&newer));
    }

    #[test]
    fn of_two_processors_that_knew_the_same_claim_only_the_first_commits() {
        let first = Manifest::sample(3, "a", &[(0, 5), (1, 5)]);
        let mut claims = Claims::default();
        claims.commit(&first, &BTreeMap::new()).unwrap();
        let took_over = known(&claims);
        // b and a zombie a both knew partition 1 claimed by a's checkpoint 3.
        let b = Manifest::sample(7, "b", &[(1, 8)]);
        claims.commit(&b, &took_over).unwrap();
        let zombie = Manifest::sample(4, "a", &[(0, 6), (1, 6)]);
        let before = claims.clone();
        let taken = claims.commit(&zombie, &took_over).unwrap_err();
        assert_eq!(
            taken,
            Taken {
                partition: 1,
                found: Some(Claim::of(&b)),
                known: Some(Claim::of(&first)),
            }
        );
        assert_eq!(claims, before, "a refused commit claims nothing");
        assert!(!claims.names(&zombie) && claims.names(&first) && claims.names(&b));
        assert!(!claims.dead(&zombie), "b has not passed its epoch yet");
        let b_later = Manifest::sample(8, "b", &[(0, 9), (1, 9)]);
        let mut known_b = took_over.clone();
        known_b.insert(1, Claim::of(&b));
        claims.commit(&b_later, &known_b).unwrap();
        assert!(claims.hold(&b_later));
        assert!(claims.dead(&zombie) && claims.dead(&first) && claims.dead(&b));
    }

    #[test]
    fn a_partition_first_claimed_by_another_is_taken() {
        let mut claims = Claims::default();
        let b = Manifest::sample(2, "b", &[(5, 1)]);
        claims.commit(&b, &BTreeMap::new()).unwrap();
        let a = Manifest::sample(3, "a", &[(5, 1)]);
        assert_eq!(
            claims.commit(&a, &BTreeMap::new()).unwrap_err().partition,
            5
        );
    }

    proptest! {
        /// Processors commit from what they last knew, stale or not, in any order: no two
        /// commits continue the same claim of a partition (no fork, so no two processors
        /// both resume from one checkpoint and publish), and a refused one changes nothing.
        #[test]
        fn commits_from_stale_knowledge_never_fork_a_partition(
            steps in prop::collection::vec(
                (0usize..3, prop::collection::btree_set(0i32..3, 1..3), any::<bool>()),
                1..40,
            ),
        ) {
            let mut claims = Claims::default();
            let mut knows: Vec<BTreeMap<Partition, Claim>> = vec![BTreeMap::new(); 3];
            let mut continued: Vec<(Partition, Option<Claim>)> = Vec::new();
            for (epoch, (member, partitions, refresh)) in steps.into_iter().enumerate() {
                if refresh {
                    knows[member] = claims.partitions.clone();
                }
                let pairs: Vec<(i32, i64)> = partitions.iter().map(|&p| (p, 0)).collect();
                let manifest = Manifest::sample(epoch as u64, &format!("m{member}"), &pairs);
                let before = claims.clone();
                match claims.commit(&manifest, &knows[member]) {
                    Ok(()) => {
                        prop_assert!(claims.hold(&manifest));
                        for &p in manifest.partitions.keys() {
                            let link = (p, before.partitions.get(&p).cloned());
                            prop_assert!(!continued.contains(&link), "{:?} forked", link);
                            continued.push(link);
                            knows[member].insert(p, Claim::of(&manifest));
                        }
                    }
                    Err(_) => prop_assert_eq!(&claims, &before),
                }
            }
        }
    }
}

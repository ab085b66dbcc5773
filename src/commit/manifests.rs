//! Checkpoint manifests on storage, the commit point of a Kafka run into Parquet folders:
//! `<bucket>/<group>/<epoch>-<member>.json`, each naming the staged files it publishes, and
//! the group's claims (`<bucket>/<group>/claims.json`), which name the checkpoint that last
//! committed each partition. A checkpoint is committed once the claims name it: the object is
//! replaced only where unchanged since it was read, so a processor whose partition another
//! committed since is fenced (docs/EXACTLY_ONCE.md, "Fencing").

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use super::markers::Markers;
use super::merger::group_folder;
use super::{CommitError, CommitPoint, Merger, Pass};
use crate::checkpoint::{self, CheckpointError, Claim, Claims, Manifest, Recovery, Taken};
use crate::record::Partition;
use crate::storage::{Storage, Version};

/// The group's claims, beside its manifests.
const CLAIMS: &str = "claims.json";

/// How often a recovery or merge reads the claims again when a checkpoint they name was
/// replaced while it was being read.
const CLAIMS_READS: usize = 5;

/// The manifests of one consumer group, which reads one topic.
#[derive(Clone)]
pub struct Manifests {
    storage: Arc<dyn Storage>,
    folder: String,
    group: String,
    topic: String,
    /// Merges the group's partial counts, when its processors write them, committing each
    /// merge with a marker.
    merging: Option<Arc<(Merger, Markers)>>,
    /// The claim of each partition this processor owns, as it last knew it: its own last
    /// checkpoint's, or the one it resumed the partition from.
    known: Arc<Mutex<BTreeMap<Partition, Claim>>>,
    /// The claims as this processor last wrote them, to swap from without reading first.
    written: Arc<Mutex<Written>>,
}

/// What a processor last wrote to the claims and their version. Kept only while no other
/// member's commit gets in between: in a group that commits in turns, a swap from it would be
/// refused every time, a PUT more than reading first. A new assignment tries again.
#[derive(Default)]
struct Written {
    last: Option<(Claims, Version)>,
    contended: bool,
}

/// The group's committed checkpoints, as its claims name them.
struct Committed {
    /// Every manifest found, the committed ones and the others.
    all: Vec<(String, Manifest)>,
    claims: Claims,
}

impl Committed {
    fn named(&self) -> Vec<Manifest> {
        self.all
            .iter()
            .filter(|(_, m)| self.claims.names(m))
            .map(|(_, m)| m.clone())
            .collect()
    }
}

impl Manifests {
    pub fn new(storage: Arc<dyn Storage>, bucket: &str, group: &str, topic: &str) -> Self {
        Manifests {
            storage,
            folder: group_folder(bucket, group),
            group: group.into(),
            topic: topic.into(),
            merging: None,
            known: Arc::default(),
            written: Arc::default(),
        }
    }

    /// The group's processors write closed windows as partial counts, which `merger` merges
    /// after its checkpoints.
    pub fn merged_by(mut self, merger: Merger) -> Self {
        let markers = Markers::of(&merger);
        self.merging = Some(Arc::new((merger, markers)));
        self
    }

    fn key(&self, name: &str) -> String {
        format!("{}/{name}", self.folder)
    }

    /// The names of the group's manifests, without reading them.
    pub(super) fn names(&self) -> Result<Vec<String>, CheckpointError> {
        let mut names = self.storage.list(&self.folder)?;
        names.retain(|name| name.ends_with(".json") && name != CLAIMS);
        Ok(names)
    }

    /// Every manifest of the group with its name. One deleted while being listed (another
    /// processor found it superseded) is skipped.
    pub fn load(&self) -> Result<Vec<(String, Manifest)>, CheckpointError> {
        let mut manifests = Vec::new();
        for name in self.names()? {
            if let Some(manifest) = self.read(&name)? {
                manifests.push((name, manifest));
            }
        }
        Ok(manifests)
    }

    /// The manifest `name`, unless it is gone.
    fn read(&self, name: &str) -> Result<Option<Manifest>, CheckpointError> {
        let key = self.key(name);
        let Some(bytes) = self.storage.get(&key)? else {
            return Ok(None);
        };
        let manifest = Manifest::checked(serde_json::from_slice(&bytes), &key)?;
        // Resumed on this topic, another topic's offsets would skip records, silently.
        if manifest.topic != self.topic {
            return Err(CheckpointError::OtherTopic {
                group: self.group.clone(),
                found: manifest.topic,
                wanted: self.topic.clone(),
                key,
            });
        }
        Ok(Some(manifest))
    }

    /// The group's claims and their version, when any processor has claimed anything.
    fn claims(&self) -> Result<Option<(Claims, Version)>, CheckpointError> {
        let key = self.key(CLAIMS);
        let Some((bytes, version)) = self.storage.get_versioned(&key)? else {
            return Ok(None);
        };
        let claims = serde_json::from_slice(&bytes).map_err(|e| CheckpointError::Corrupt {
            key,
            problem: e.to_string(),
        })?;
        Ok(Some((claims, version)))
    }

    /// The group's manifests and claims, read so that every checkpoint a claim names is
    /// among the manifests: one committed while they were listed is read by its name.
    fn committed(&self) -> Result<Committed, CheckpointError> {
        let mut all = self.load()?;
        let mut lost = None;
        for _ in 0..CLAIMS_READS {
            let claims = self
                .claims()?
                .map_or_else(|| before_claims(&all), |(c, _)| c);
            let missing: Vec<(Partition, String)> = (claims.partitions.iter())
                .map(|(&p, c)| (p, checkpoint::manifest_name(c.epoch, &c.member)))
                .filter(|(_, name)| !all.iter().any(|(n, _)| n == name))
                .collect();
            lost = None;
            for (partition, name) in missing {
                match self.read(&name)? {
                    Some(manifest) => all.push((name, manifest)),
                    // Replaced since the claims were read: they name a newer one now.
                    None => lost = Some((partition, name)),
                }
            }
            if lost.is_none() {
                return Ok(Committed { all, claims });
            }
        }
        let (partition, manifest) = lost.expect("the last read found a claimed checkpoint gone");
        Err(CheckpointError::Lost {
            key: self.key(CLAIMS),
            partition,
            manifest,
        })
    }

    /// The group's committed checkpoints: those its claims name.
    pub(super) fn committed_checkpoints(&self) -> Result<Vec<Manifest>, CheckpointError> {
        Ok(self.committed()?.named())
    }

    /// Writes `manifest` under its name, which it returns.
    pub(super) fn save(&self, manifest: &Manifest) -> Result<String, CheckpointError> {
        let bytes = serde_json::to_vec(manifest).expect("a manifest always serialises");
        let name = checkpoint::manifest_name(manifest.epoch, &manifest.member);
        self.storage.put(&self.key(&name), &bytes)?;
        Ok(name)
    }

    /// The commit point: claims every partition of the saved `manifest` for it, where each
    /// claim is still the one this processor knew. Another's claim fences it.
    fn claim(&self, manifest: &Manifest) -> Result<(), CheckpointError> {
        let key = self.key(CLAIMS);
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let mut written = self.written.lock().unwrap_or_else(|e| e.into_inner());
        // First from what this processor wrote last, which is still there unless another
        // member committed since: then the swap is refused and the claims are read.
        let mut last = written.last.take();
        loop {
            let from_last = last.is_some();
            let (mut claims, version) = match last.take() {
                Some((claims, version)) => (claims, Some(version)),
                None => match self.claims()? {
                    Some((claims, version)) => (claims, Some(version)),
                    None => (before_claims(&self.load()?), None),
                },
            };
            // A swap S3 took while its answer was lost is tried again and refused: it then
            // finds itself.
            if claims.hold(manifest) {
                break;
            }
            if let Err(taken) = claims.commit(manifest, &known) {
                if from_last {
                    written.contended = true;
                    continue;
                }
                return Err(self.fenced(taken));
            }
            let bytes = serde_json::to_vec(&claims).expect("claims always serialise");
            if let Some(now) = self.storage.swap(&key, &bytes, version.as_ref())? {
                if !written.contended {
                    written.last = Some((claims, now));
                }
                break;
            }
            written.contended |= from_last;
        }
        for &partition in manifest.partitions.keys() {
            known.insert(partition, Claim::of(manifest));
        }
        Ok(())
    }

    fn fenced(&self, taken: Taken) -> CheckpointError {
        let describe = |claim: Option<Claim>| {
            claim.map_or("no checkpoint".into(), |c| {
                format!("checkpoint {} of {}", c.epoch, c.member)
            })
        };
        CheckpointError::Fenced {
            topic: self.topic.clone(),
            partition: taken.partition,
            found: describe(taken.found),
            known: describe(taken.known),
            key: self.key(CLAIMS),
        }
    }

    /// Removes the manifest `name`; one another processor removed already is fine.
    pub(super) fn delete(&self, name: &str) -> Result<(), CheckpointError> {
        Ok(self.storage.delete(&self.key(name))?)
    }

    /// Removes the staged files no checkpoint can publish and the manifests no recovery can
    /// pick: once a recovery has published what it had to.
    pub(super) fn tidy(&self, superseded: &[String]) -> Result<(), CheckpointError> {
        self.storage.remove_staged_orphans()?;
        for name in superseded {
            self.delete(name)?;
        }
        Ok(())
    }
}

/// The claims of a group before its first commit that claims anything: the manifests of
/// processors from before claims (format version 3 and older) claim each partition as
/// recovery then took it, by the newest holding it.
fn before_claims(all: &[(String, Manifest)]) -> Claims {
    let unclaimed: Vec<Manifest> = all
        .iter()
        .filter(|(_, m)| m.version < checkpoint::CLAIMED)
        .map(|(_, m)| m.clone())
        .collect();
    Claims::before_claims(&unclaimed)
}

impl CommitPoint for Manifests {
    fn recover(&self, assigned: &[i32]) -> Result<Recovery, CommitError> {
        let committed = self.committed()?;
        let mut recovery = checkpoint::recover(&committed.named(), assigned);
        recovery.epoch = (committed.all.iter())
            .map(|(_, m)| m.epoch + 1)
            .fold(recovery.epoch, u64::max);
        let (dead, live): (Vec<_>, Vec<_>) =
            (committed.all.iter().cloned()).partition(|(_, m)| committed.claims.dead(m));
        recovery.superseded = dead.into_iter().map(|(name, _)| name).collect();
        recovery.replaced = checkpoint::replaced(&live, assigned);
        if let Some((merger, markers)) = self.merging.as_deref() {
            recovery.merged_to(markers.committed_to(merger.storage())?, assigned);
        }
        Ok(recovery)
    }

    fn complete(&self, recovery: &Recovery) -> Result<(), CommitError> {
        for file in &recovery.unpublished {
            match self.merging.as_deref() {
                Some((merger, markers)) => merger.publish(file, markers)?,
                None => self.storage.publish_staged(&file.staged, &file.key)?,
            }
        }
        *self.written.lock().unwrap_or_else(|e| e.into_inner()) = Written::default();
        *self.known.lock().unwrap_or_else(|e| e.into_inner()) = (recovery.committed.iter())
            .filter_map(|(&partition, &epoch)| {
                let from = recovery
                    .from
                    .iter()
                    .find(|m| m.epoch == epoch && m.partitions.contains_key(&partition))?;
                Some((partition, Claim::of(from)))
            })
            .collect();
        Ok(self.tidy(&recovery.superseded)?)
    }

    fn commit(&self, manifest: &Manifest, replaced: &[String]) -> Result<String, CommitError> {
        let name = self.save(manifest)?;
        if let Err(e) = self.claim(manifest) {
            if matches!(e, CheckpointError::Fenced { .. }) {
                // Never committed, and never will be: nobody needs it.
                let _ = self.delete(&name);
            }
            return Err(e.into());
        }
        for file in &manifest.files {
            self.storage.publish_staged(&file.staged, &file.key)?;
        }
        for old in replaced {
            self.delete(old)?;
        }
        Ok(name)
    }

    fn partials(&self) -> Option<&str> {
        self.merging.as_deref().map(|(merger, _)| merger.partials())
    }

    fn merge(&self, committed: Option<&Manifest>) -> Result<Option<Pass>, CommitError> {
        let Some((merger, markers)) = self.merging.as_deref() else {
            return Ok(None);
        };
        if !merger.worth_a_look(committed) {
            return Ok(None);
        }
        // Only committed checkpoints: one being committed, or a fenced processor's, may
        // never be.
        let manifests = self.committed_checkpoints()?;
        Ok(Some(merger.pass(&manifests, markers)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{StagedFile, manifest_name};

    /// A manifest committed by a processor that owned its partitions and then died, before
    /// publishing its files.
    fn left_behind(manifests: &Manifests, m: &Manifest) {
        manifests.save(m).unwrap();
        let claims = manifests.claims().unwrap().map(|(c, _)| c.partitions);
        *manifests.known.lock().unwrap() = claims.unwrap_or_default();
        manifests.claim(m).unwrap();
    }

    fn point(root: &std::path::Path) -> Manifests {
        let storage: Arc<dyn Storage> = Arc::new(crate::storage::LocalStorage::open(root).unwrap());
        Manifests::new(storage, "cp", "g", "t")
    }

    fn take(point: &Manifests, partitions: &[i32]) -> Recovery {
        let recovery = point.recover(partitions).unwrap();
        point.complete(&recovery).unwrap();
        recovery
    }

    fn staged(point: &Manifests, key: &str) -> StagedFile {
        let mut file = point.storage.create("raw").unwrap();
        std::io::Write::write_all(&mut file, b"rows").unwrap();
        StagedFile {
            staged: file.stage().unwrap().id,
            key: key.into(),
            ..StagedFile::default()
        }
    }

    #[test]
    fn of_two_processors_that_took_the_same_partition_one_commits_and_the_other_stops() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (point(dir.path()), point(dir.path()));
        let first = take(&a, &[0]);
        let second = take(&b, &[0]);
        let by_a = Manifest::of_partition_0(first.epoch, "a", 10, vec![staged(&a, "raw/a")]);
        a.commit(&by_a, &[]).unwrap();
        let by_b = Manifest::of_partition_0(second.epoch, "b", 10, vec![staged(&b, "raw/b")]);
        let message = b.commit(&by_b, &[]).unwrap_err().to_string();
        assert!(
            message.contains("partition 0 of t was committed by another processor of the group")
                && message.contains("names checkpoint 0 of a where this one knew no checkpoint")
                && message.contains("cp/g/claims.json")
                && message.contains("stops"),
            "{message}"
        );
        assert!(dir.path().join("raw/a").exists());
        assert!(
            !dir.path().join("raw/b").exists(),
            "the fenced one publishes nothing"
        );
        let names: Vec<String> = a.load().unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, [manifest_name(0, "a")], "nor keeps its manifest");
        a.commit(
            &Manifest::of_partition_0(first.epoch + 1, "a", 20, Vec::new()),
            &[],
        )
        .unwrap();
    }

    /// A zombie: a's partition was taken over by b, which committed it, while a could not
    /// tell. a's next checkpoint is refused; whoever recovers next resumes from b's, and
    /// never publishes what a wrote since.
    #[test]
    fn a_zombie_is_fenced_and_its_checkpoint_is_never_recovered_nor_merged_from() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (point(dir.path()), point(dir.path()));
        let first = take(&a, &[0]);
        a.commit(
            &Manifest::of_partition_0(first.epoch, "a", 10, Vec::new()),
            &[],
        )
        .unwrap();
        let second = take(&b, &[0]);
        assert_eq!(second.partitions[&0].next, 10);
        b.commit(
            &Manifest::of_partition_0(second.epoch, "b", 15, Vec::new()),
            &second.replaced,
        )
        .unwrap();
        // a's checkpoint is saved before the claims refuse it; one left there by a zombie
        // killed in between is never picked.
        let late = Manifest::of_partition_0(first.epoch + 5, "a", 30, vec![staged(&a, "raw/late")]);
        a.save(&late).unwrap();
        let err = a.commit(&late, &[]).unwrap_err();
        assert!(
            matches!(
                err,
                CommitError::Checkpoint(CheckpointError::Fenced { partition: 0, .. })
            ),
            "{err}"
        );
        a.save(&late).unwrap();
        let third = point(dir.path());
        let resumed = take(&third, &[0]);
        assert_eq!(
            resumed.partitions[&0].next, 15,
            "b's checkpoint, not a's later one"
        );
        assert!(
            !dir.path().join("raw/late").exists(),
            "the zombie's files stay unpublished"
        );
        assert!(resumed.epoch > late.epoch, "names never collide");
        assert_eq!(third.committed().unwrap().named(), resumed.from);
        // Once the group's claims pass it, the zombie's manifest is deleted.
        third
            .commit(
                &Manifest::of_partition_0(resumed.epoch, "c", 40, Vec::new()),
                &resumed.replaced,
            )
            .unwrap();
        let names: Vec<String> = third.load().unwrap().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, [manifest_name(resumed.epoch, "c")]);
    }

    #[test]
    fn a_commit_whose_answer_was_lost_finds_itself_committed() {
        let dir = tempfile::tempdir().unwrap();
        let a = point(dir.path());
        let first = take(&a, &[0]);
        let m = Manifest::of_partition_0(first.epoch, "a", 10, Vec::new());
        a.commit(&m, &[]).unwrap();
        // Tried again from what it knew before, the claims read again: they hold it already.
        *a.known.lock().unwrap() = BTreeMap::new();
        a.written.lock().unwrap().last = None;
        a.commit(&m, &[]).unwrap();
    }

    #[test]
    fn a_group_whose_checkpoints_are_of_another_topic_is_refused_naming_both() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> =
            Arc::new(crate::storage::LocalStorage::open(dir.path()).unwrap());
        left_behind(
            &Manifests::new(storage.clone(), "cp", "g", "t"),
            &Manifest::of_partition_0(3, "a", 10, Vec::new()),
        );
        let other = Manifests::new(storage, "cp", "g", "clicks");
        let refused = other.recover(&[0]).expect_err("refused").to_string();
        assert!(
            refused.contains("consumer group g has checkpoints of topic t")
                && refused.contains("not clicks")
                && refused.contains("--group"),
            "{refused}"
        );
    }

    #[test]
    fn recovery_only_reads_and_completing_it_publishes_the_newest_manifests_files() {
        let dir = tempfile::tempdir().unwrap();
        let storage: Arc<dyn Storage> =
            Arc::new(crate::storage::LocalStorage::open(dir.path()).unwrap());
        let manifests = Manifests::new(storage.clone(), "cp", "my group", "t");
        let mut file = storage.create("k").unwrap();
        std::io::Write::write_all(&mut file, b"rows").unwrap();
        let staged = file.stage().unwrap();
        let older = StagedFile {
            staged: staged.id,
            key: "out/f".into(),
            ..StagedFile::default()
        };
        left_behind(
            &manifests,
            &Manifest::of_partition_0(3, "a", 10, vec![older]),
        );
        // Its staged file does not exist, and its key does not either: a hand-made manifest.
        let missing = StagedFile {
            staged: "gone".into(),
            key: "k4".into(),
            ..StagedFile::default()
        };
        left_behind(
            &manifests,
            &Manifest::of_partition_0(4, "a", 12, vec![missing]),
        );

        let r = manifests.recover(&[0]).unwrap();
        assert_eq!(r.partitions[&0].next, 12);
        assert_eq!(manifests.load().unwrap().len(), 2, "recovering only reads");
        assert_eq!(r.superseded, [manifest_name(3, "a")]);
        assert_eq!(
            r.replaced,
            [manifest_name(4, "a")],
            "the first one replaces it"
        );
        assert!(
            manifests.complete(&r).is_err(),
            "k4 can be published nowhere"
        );
        storage.put("k4", b"published").unwrap();
        manifests.complete(&r).unwrap();
        assert!(
            !dir.path().join("out/f").exists(),
            "only the newest manifest publishes"
        );
        let left = manifests.load().unwrap();
        assert_eq!(left.len(), 1, "completing deletes superseded manifests");
        assert!(manifests.recover(&[1]).unwrap().replaced.is_empty());

        let name = manifests
            .commit(
                &Manifest::of_partition_0(5, "a", 20, Vec::new()),
                &r.replaced,
            )
            .unwrap();
        let left: Vec<String> = manifests
            .load()
            .unwrap()
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(left, [name], "a commit deletes what it replaces");

        storage.put("cp/my_group/x.json", b"{").unwrap();
        let err = manifests.load().unwrap_err();
        assert!(err.to_string().contains("cp/my_group/x.json"), "{err}");
    }
}

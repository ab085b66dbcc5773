//! Checkpoint manifests on storage, the commit point of a Kafka run into Parquet folders:
//! `<bucket>/<group>/<epoch>-<member>.json`, each naming the staged files it publishes.

use std::sync::Arc;

use super::markers::Markers;
use super::{CommitError, CommitPoint, Merger, Pass};
use crate::checkpoint::{self, CheckpointError, Manifest, Recovery};
use crate::sink::naming;
use crate::storage::Storage;

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
}

impl Manifests {
    pub fn new(storage: Arc<dyn Storage>, bucket: &str, group: &str, topic: &str) -> Self {
        Manifests {
            storage,
            folder: format!("{bucket}/{}", naming::source_tag(group)),
            group: group.into(),
            topic: topic.into(),
            merging: None,
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
        names.retain(|name| name.ends_with(".json"));
        Ok(names)
    }

    /// Every manifest of the group with its name. One deleted while being listed (another
    /// processor found it superseded) is skipped.
    pub fn load(&self) -> Result<Vec<(String, Manifest)>, CheckpointError> {
        let mut manifests = Vec::new();
        for name in self.names()? {
            let key = self.key(&name);
            let Some(bytes) = self.storage.get(&key)? else {
                continue;
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
            manifests.push((name, manifest));
        }
        Ok(manifests)
    }

    /// Writes `manifest` under its name, which it returns.
    pub(super) fn save(&self, manifest: &Manifest) -> Result<String, CheckpointError> {
        let bytes = serde_json::to_vec(manifest).expect("a manifest always serialises");
        let name = checkpoint::manifest_name(manifest.epoch, &manifest.member);
        self.storage.put(&self.key(&name), &bytes)?;
        Ok(name)
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

impl CommitPoint for Manifests {
    fn recover(&self, assigned: &[i32]) -> Result<Recovery, CommitError> {
        let named = self.load()?;
        let manifests: Vec<Manifest> = named.iter().map(|(_, m)| m.clone()).collect();
        let mut recovery = checkpoint::recover(&manifests, assigned);
        (recovery.superseded, recovery.replaced) = checkpoint::sort_out(named, assigned);
        if let Some((merger, markers)) = self.merging.as_deref() {
            recovery.merged_to(markers.committed_to(merger)?, assigned);
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
        Ok(self.tidy(&recovery.superseded)?)
    }

    fn commit(&self, manifest: &Manifest, replaced: &[String]) -> Result<String, CommitError> {
        let name = self.save(manifest)?;
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
        let manifests: Vec<_> = self.load()?.into_iter().map(|(_, m)| m).collect();
        Ok(Some(merger.pass(&manifests, markers)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{StagedFile, manifest_name};

    /// A manifest made durable by a processor that then died, before publishing its files.
    fn left_behind(manifests: &Manifests, m: &Manifest) {
        manifests.save(m).unwrap();
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

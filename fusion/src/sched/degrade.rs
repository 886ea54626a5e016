//! The degradation ladder: which work to drop, rung by rung, as measured slack shrinks,
//! with hysteresis on the way back.
use serde::Serialize;
use std::str::FromStr;

/// One rung of the degradation ladder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rung {
    /// Run the detector on every other camera set only.
    SkipDetectorAlternate,
    /// Halve the detector's input size.
    ReduceDetectorInput,
    /// Leave radar out of the association.
    SkipRadarAssociation,
    /// Cluster every other LiDAR return on coarser voxels.
    CoarseLidarClustering,
}

impl Rung {
    pub fn name(self) -> &'static str {
        match self {
            Rung::SkipDetectorAlternate => "skip_detector_alternate",
            Rung::ReduceDetectorInput => "reduce_detector_input",
            Rung::SkipRadarAssociation => "skip_radar_association",
            Rung::CoarseLidarClustering => "coarse_lidar_clustering",
        }
    }
}

impl FromStr for Rung {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        [
            Rung::SkipDetectorAlternate,
            Rung::ReduceDetectorInput,
            Rung::SkipRadarAssociation,
            Rung::CoarseLidarClustering,
        ]
        .into_iter()
        .find(|r| r.name() == s.trim())
        .ok_or_else(|| {
            format!(
                "'{s}' is not a degradation rung (skip_detector_alternate, reduce_detector_input, \
                     skip_radar_association, coarse_lidar_clustering)"
            )
        })
    }
}

/// Parses a comma-separated ladder ("" = no degradation).
pub fn parse_ladder(s: &str) -> Result<Vec<Rung>, String> {
    s.split(',').filter(|r| !r.trim().is_empty()).map(str::parse).collect()
}

#[derive(Debug, Clone)]
pub struct DegradeConfig {
    /// Rungs in the order they engage.
    pub ladder: Vec<Rung>,
    /// Decisions are taken once per window of this many finished (published or shed) sets.
    pub window: u32,
    /// Step down when the window's worst slack to the target deadline was below this (ns),
    /// or any set of it was shed.
    pub engage_slack_ns: i64,
    /// Step back up when the worst slack stayed above this (ns) for `recover_windows`
    /// windows in a row: engage < recover is the hysteresis.
    pub recover_slack_ns: i64,
    pub recover_windows: u32,
}

impl Default for DegradeConfig {
    fn default() -> Self {
        Self {
            ladder: vec![
                Rung::SkipDetectorAlternate,
                Rung::ReduceDetectorInput,
                Rung::SkipRadarAssociation,
                Rung::CoarseLidarClustering,
            ],
            window: 10,
            engage_slack_ns: 5_000_000,
            recover_slack_ns: 20_000_000,
            recover_windows: 3,
        }
    }
}

/// The degradation level (0 = full quality; n = the first n rungs in force), moved by the
/// measured slack of finished sets.
#[derive(Debug, Clone)]
pub struct Degradation {
    cfg: DegradeConfig,
    level: usize,
    seen: u32,
    worst_slack: i64,
    shed: bool,
    good_windows: u32,
    pub max_level: usize,
    pub changes: u64,
}

impl Degradation {
    pub fn new(cfg: DegradeConfig) -> Self {
        Self { cfg, level: 0, seen: 0, worst_slack: i64::MAX, shed: false, good_windows: 0, max_level: 0, changes: 0 }
    }

    pub fn level(&self) -> usize {
        self.level
    }

    /// The rungs in force.
    pub fn rungs(&self) -> &[Rung] {
        &self.cfg.ladder[..self.level]
    }

    pub fn active(&self, rung: Rung) -> bool {
        self.rungs().contains(&rung)
    }

    /// "nominal" or the last rung in force.
    pub fn describe(&self) -> &'static str {
        self.rungs().last().map_or("nominal", |r| r.name())
    }

    /// A set was published with this slack to its target deadline (ns, negative = late).
    /// Returns the new level when it changed.
    pub fn observe(&mut self, slack_ns: i64) -> Option<usize> {
        self.worst_slack = self.worst_slack.min(slack_ns);
        self.finish_one()
    }

    /// A set was shed.
    pub fn observe_shed(&mut self) -> Option<usize> {
        self.shed = true;
        self.finish_one()
    }

    fn finish_one(&mut self) -> Option<usize> {
        self.seen += 1;
        if self.seen < self.cfg.window.max(1) {
            return None;
        }
        let before = self.level;
        if self.shed || self.worst_slack < self.cfg.engage_slack_ns {
            self.good_windows = 0;
            self.level = (self.level + 1).min(self.cfg.ladder.len());
        } else if self.worst_slack > self.cfg.recover_slack_ns {
            self.good_windows += 1;
            if self.good_windows >= self.cfg.recover_windows && self.level > 0 {
                self.level -= 1;
                self.good_windows = 0;
            }
        } else {
            self.good_windows = 0;
        }
        self.seen = 0;
        self.worst_slack = i64::MAX;
        self.shed = false;
        self.max_level = self.max_level.max(self.level);
        (self.level != before).then(|| {
            self.changes += 1;
            self.level
        })
    }
}

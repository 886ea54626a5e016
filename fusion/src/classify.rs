//! Labels that agree with geometry: what a LiDAR box's extent allows an object to be, and
//! how much a camera's class vote is worth against it.
//!
//! A LiDAR box covers only the faces the sensor saw, so its extent is a *lower bound* of
//! the object's: a box longer or taller than any member of a class rules that class out
//! (a 4.8 m box is not a person). A box smaller than a class's smallest member only speaks
//! weakly against it (it may be partly hidden), and only when enough returns outline it.
//!
//! Motion over the ground is the other thing geometry knows: an obstacle does not move, and
//! a person does not move at a car's speed. A track's ground velocity (its velocity relative
//! to the ego plus the ego's own, from odometry or the radar's Doppler) rules those out.
use crate::{cluster::ObjectBox, detect::Label};
use serde::{Deserialize, Serialize};

/// Extents a class can have (metres): the longest horizontal side and the height (top
/// above the ground).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ClassExtent {
    pub min_footprint: f64,
    pub max_footprint: f64,
    pub min_height: f64,
    pub max_height: f64,
}

const fn extent(min_footprint: f64, max_footprint: f64, min_height: f64, max_height: f64) -> ClassExtent {
    ClassExtent { min_footprint, max_footprint, min_height, max_height }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClassPriors {
    pub person: ClassExtent,
    pub vehicle: ClassExtent,
    pub obstacle: ClassExtent,
    /// Slack on the upper bounds (m): clustering noise and a carried object.
    pub margin: f64,
    /// Below a class's lower bounds, a box of at least this many returns weighs a camera
    /// vote for that class by `undersized_weight` (fewer returns: no judgement).
    pub min_points: usize,
    pub undersized_weight: f32,
    /// A track moving over the ground at least this fast (m/s) is not an obstacle.
    pub moving_speed: f64,
    /// A track moving faster than this (m/s) is not a person.
    pub person_max_speed: f64,
}

impl Default for ClassPriors {
    fn default() -> Self {
        Self {
            person: extent(0.0, 1.2, 0.9, 2.2),
            vehicle: extent(1.4, 20.0, 0.9, 4.5),
            obstacle: extent(0.0, 3.0, 0.0, 2.0),
            margin: 0.15,
            min_points: 15,
            undersized_weight: 0.3,
            moving_speed: 0.8,
            person_max_speed: 4.0,
        }
    }
}

/// What the geometry says of one class for one box.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fit {
    /// Nothing speaks against it.
    Plausible,
    /// The box is smaller than the class's smallest member (and well outlined).
    Undersized,
    /// The box is larger than any member: the class is ruled out.
    RuledOut,
}

impl ClassPriors {
    fn extent(&self, label: Label) -> Option<&ClassExtent> {
        match label {
            Label::Person => Some(&self.person),
            Label::Vehicle => Some(&self.vehicle),
            Label::Obstacle => Some(&self.obstacle),
            Label::Unknown => None,
        }
    }

    /// How `label` fits a LiDAR box as observed (before amodal completion).
    pub fn fit(&self, label: Label, seen: &ObjectBox) -> Fit {
        let Some(e) = self.extent(label) else { return Fit::Plausible };
        let footprint = seen.size[0].max(seen.size[1]);
        // The box starts above the ground band: the object reaches down to the ground.
        let height = seen.center[2] + seen.size[2] / 2.0;
        if footprint > e.max_footprint + self.margin || height > e.max_height + self.margin {
            Fit::RuledOut
        } else if seen.points >= self.min_points && (footprint < e.min_footprint || height < e.min_height) {
            Fit::Undersized
        } else {
            Fit::Plausible
        }
    }

    /// The weight of a camera vote for `label` on this box: 1, `undersized_weight`, or 0.
    pub fn camera_weight(&self, label: Label, seen: &ObjectBox) -> f32 {
        match self.fit(label, seen) {
            Fit::Plausible => 1.0,
            Fit::Undersized => self.undersized_weight,
            Fit::RuledOut => 0.0,
        }
    }
}

impl ClassPriors {
    /// Whether moving at `speed` over the ground rules `label` out.
    pub fn motion_rules_out(&self, label: Label, speed: f64) -> bool {
        match label {
            Label::Obstacle => speed >= self.moving_speed,
            Label::Person => speed > self.person_max_speed,
            Label::Vehicle | Label::Unknown => false,
        }
    }

    /// A track's label from its accumulated votes (per [`Label::index`]), weighed against
    /// its ground speed when known: votes for a class the motion rules out do not count.
    /// When the motion rules out everything the sensors voted for (a walking person LiDAR
    /// alone saw as a small box, a radar-only track at car speed), speed and size decide,
    /// with low confidence. Returns the label and its share of the votes that count.
    pub fn track_label(&self, votes: &[f32; 4], ground_speed: Option<f64>, size: [f64; 3]) -> (Label, f32) {
        let mut counted = *votes;
        if let Some(speed) = ground_speed {
            for label in [Label::Person, Label::Vehicle, Label::Obstacle] {
                if self.motion_rules_out(label, speed) {
                    counted[label.index()] = 0.0;
                }
            }
            if counted.iter().sum::<f32>() <= 0.0 && speed >= self.moving_speed {
                let footprint = size[0].max(size[1]);
                let person_sized = footprint <= self.person.max_footprint + self.margin;
                let label = if speed > self.person_max_speed || !person_sized { Label::Vehicle } else { Label::Person };
                return (label, MOTION_ONLY_CONFIDENCE);
            }
        }
        let total: f32 = counted.iter().sum();
        if total <= 0.0 {
            return (Label::Unknown, 0.0);
        }
        let (i, best) = counted.iter().enumerate().fold((3, 0.0f32), |a, (i, v)| if *v > a.1 { (i, *v) } else { a });
        (Label::ALL[i], best / total)
    }
}

/// Confidence of a label that only the motion and the size gave.
pub const MOTION_ONLY_CONFIDENCE: f32 = 0.3;

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(l: f64, w: f64, h: f64, points: usize) -> ObjectBox {
        // As clustering makes them: the box starts ~0.2 m above the ground.
        ObjectBox { center: [10.0, 0.0, 0.2 + h / 2.0], size: [l, w, h], yaw: 0.0, points }
    }

    #[test]
    fn a_car_sized_box_is_not_a_person_and_a_small_one_not_a_vehicle() {
        let p = ClassPriors::default();
        let car = seen(4.8, 1.9, 1.05, 300);
        assert_eq!(p.fit(Label::Person, &car), Fit::RuledOut);
        assert_eq!(p.fit(Label::Vehicle, &car), Fit::Plausible);
        // The car's rear face alone (0.3 m deep) is still 1.9 m wide.
        assert_eq!(p.fit(Label::Person, &seen(0.3, 1.9, 1.1, 120)), Fit::RuledOut);
        let person = seen(0.5, 0.6, 1.5, 90);
        assert_eq!(p.fit(Label::Person, &person), Fit::Plausible);
        assert_eq!(p.fit(Label::Vehicle, &person), Fit::Undersized);
        assert_eq!(p.camera_weight(Label::Vehicle, &person), 0.3);
        // Too few returns to judge a small box: a far or hidden car may look like this.
        assert_eq!(p.fit(Label::Vehicle, &seen(0.5, 0.6, 1.2, 8)), Fit::Plausible);
        // A 3.3 m truck is no person either; an unknown label is never ruled out.
        assert_eq!(p.fit(Label::Person, &seen(0.8, 0.9, 3.1, 200)), Fit::RuledOut);
        assert_eq!(p.fit(Label::Unknown, &car), Fit::Plausible);
    }

    #[test]
    fn what_moves_is_no_obstacle_and_what_is_fast_no_person() {
        let p = ClassPriors::default();
        let idx = |l: Label| l.index();
        let mut votes = [0.0f32; 4];
        votes[idx(Label::Obstacle)] = 3.0;
        votes[idx(Label::Person)] = 1.0;
        let small = [0.6, 0.5, 1.7];
        // Standing still, or no ego speed: the votes decide.
        assert_eq!(p.track_label(&votes, Some(0.2), small).0, Label::Obstacle);
        assert_eq!(p.track_label(&votes, None, small).0, Label::Obstacle);
        // Walking: the obstacle votes no longer count.
        assert_eq!(p.track_label(&votes, Some(1.3), small), (Label::Person, 1.0));
        // LiDAR alone called a walking person an obstacle: speed and size decide.
        let only_obstacle = {
            let mut v = [0.0; 4];
            v[idx(Label::Obstacle)] = 2.0;
            v
        };
        assert_eq!(p.track_label(&only_obstacle, Some(1.3), small), (Label::Person, MOTION_ONLY_CONFIDENCE));
        // At car speed neither a person nor an obstacle, whatever the size or the votes.
        assert_eq!(p.track_label(&votes, Some(7.0), small).0, Label::Vehicle);
        // A radar-only track with no class vote at all.
        assert_eq!(p.track_label(&[0.0; 4], Some(6.0), [1.0, 1.0, 1.5]).0, Label::Vehicle);
        assert_eq!(p.track_label(&[0.0; 4], Some(0.1), [1.0, 1.0, 1.5]).0, Label::Unknown);
        // A slow, car-sized obstacle-voted box: a vehicle creeping.
        assert_eq!(p.track_label(&only_obstacle, Some(1.5), [3.2, 1.8, 0.64]).0, Label::Vehicle);
    }
}

//! Labels that agree with geometry: what a LiDAR box's extent allows an object to be, and
//! how much a camera's class vote is worth against it.
//!
//! A LiDAR box covers only the faces the sensor saw, so its extent is a *lower bound* of
//! the object's: a box longer or taller than any member of a class rules that class out
//! (a 4.8 m box is not a person). A box smaller than a class's smallest member only speaks
//! weakly against it (it may be partly hidden), and only when enough returns outline it.
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
}

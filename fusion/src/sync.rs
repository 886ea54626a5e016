//! Time synchronization of sensor streams.
//!
//! `ApproximateTime` is a faithful port of ROS `message_filters`' ApproximateTime policy
//! (approximate_time.h, the ROS 1 / ROS 2 algorithm): it emits exactly the sets the C++
//! implementation emits, including its queue-overflow behaviour, age penalty, maximum
//! interval, per-topic inter-message lower bounds, and ROS `Duration * double` rounding.
//! Stamps are nanoseconds. The tests compare it with the C++ original on randomized streams.
use std::collections::VecDeque;

/// `ros::Duration * double`: through seconds as f64, then back with ROS's rounding
/// (floor of the seconds, nanoseconds rounded half away from zero).
pub fn ros_scale(d_ns: i64, scale: f64) -> i64 {
    const NS: i64 = 1_000_000_000;
    let (sec, nsec) = (d_ns.div_euclid(NS), d_ns.rem_euclid(NS));
    let d = (sec as f64 + 1e-9 * nsec as f64) * scale;
    let s = d.floor();
    let mut ns = ((d - s) * 1e9).round() as i64;
    let mut s = s as i64;
    s += ns / NS;
    ns %= NS;
    s * NS + ns
}

#[derive(Debug, Clone)]
pub struct ApproximateTimeConfig {
    pub topics: usize,
    pub queue_size: usize,
    pub age_penalty: f64,
    /// None: no limit.
    pub max_interval_ns: Option<i64>,
    /// Per topic, nanoseconds (0 = none).
    pub lower_bounds_ns: Vec<i64>,
}

impl ApproximateTimeConfig {
    pub fn new(topics: usize, queue_size: usize) -> Self {
        Self { topics, queue_size, age_penalty: 0.1, max_interval_ns: None, lower_bounds_ns: vec![0; topics] }
    }
}

/// The ApproximateTime policy over items with stamps (`(stamp_ns, T)`).
pub struct ApproximateTime<T: Clone> {
    cfg: ApproximateTimeConfig,
    deques: Vec<VecDeque<(i64, T)>>,
    past: Vec<Vec<(i64, T)>>,
    candidate: Option<Vec<(i64, T)>>,
    num_non_empty: usize,
    pivot: Option<usize>,
    pivot_time: i64,
    candidate_start: i64,
    candidate_end: i64,
    has_dropped: Vec<bool>,
    /// Sets emitted by the calls since the last `take_sets`.
    out: Vec<Vec<(i64, T)>>,
    /// Messages dropped by the queue limit, per topic (for diagnostics).
    pub dropped: Vec<u64>,
}

impl<T: Clone> ApproximateTime<T> {
    pub fn new(cfg: ApproximateTimeConfig) -> Self {
        assert!(cfg.topics >= 2 && cfg.topics <= 9, "ApproximateTime takes 2 to 9 topics");
        assert!(cfg.queue_size > 0);
        let n = cfg.topics;
        Self {
            deques: (0..n).map(|_| VecDeque::new()).collect(),
            past: (0..n).map(|_| Vec::new()).collect(),
            candidate: None,
            num_non_empty: 0,
            pivot: None,
            pivot_time: 0,
            candidate_start: 0,
            candidate_end: 0,
            has_dropped: vec![false; n],
            out: vec![],
            dropped: vec![0; n],
            cfg,
        }
    }

    /// Adds a message of topic `i`; returns the sets this completes (stamps and items in
    /// topic order).
    pub fn add(&mut self, i: usize, stamp: i64, item: T) -> Vec<Vec<(i64, T)>> {
        let n = self.cfg.topics;
        self.deques[i].push_back((stamp, item));
        if self.deques[i].len() == 1 {
            self.num_non_empty += 1;
            if self.num_non_empty == n {
                self.process();
            }
        }
        // (The inter-message bound check only warns outside the sim-time reset mode.)
        if self.deques[i].len() + self.past[i].len() > self.cfg.queue_size {
            self.num_non_empty = 0;
            for k in 0..n {
                self.recover_all(k);
            }
            self.deques[i].pop_front();
            self.has_dropped[i] = true;
            self.dropped[i] += 1;
            if self.pivot.is_some() {
                self.candidate = None;
                self.pivot = None;
                self.process();
            }
        }
        std::mem::take(&mut self.out)
    }

    fn dequeue_delete_front(&mut self, i: usize) {
        self.deques[i].pop_front();
        if self.deques[i].is_empty() {
            self.num_non_empty -= 1;
        }
    }

    fn move_front_to_past(&mut self, i: usize) {
        let front = self.deques[i].pop_front().expect("non-empty deque");
        self.past[i].push(front);
        if self.deques[i].is_empty() {
            self.num_non_empty -= 1;
        }
    }

    fn make_candidate(&mut self) {
        self.candidate = Some(self.deques.iter().map(|d| d.front().expect("non-empty").clone()).collect());
        for p in &mut self.past {
            p.clear();
        }
    }

    fn recover_n(&mut self, i: usize, mut num: usize) {
        while num > 0 {
            let m = self.past[i].pop().expect("num ≤ past size");
            self.deques[i].push_front(m);
            num -= 1;
        }
        if !self.deques[i].is_empty() {
            self.num_non_empty += 1;
        }
    }

    fn recover_all(&mut self, i: usize) {
        while let Some(m) = self.past[i].pop() {
            self.deques[i].push_front(m);
        }
        if !self.deques[i].is_empty() {
            self.num_non_empty += 1;
        }
    }

    fn recover_and_delete(&mut self, i: usize) {
        while let Some(m) = self.past[i].pop() {
            self.deques[i].push_front(m);
        }
        self.deques[i].pop_front();
        if !self.deques[i].is_empty() {
            self.num_non_empty += 1;
        }
    }

    fn publish_candidate(&mut self) {
        if let Some(c) = self.candidate.take() {
            self.out.push(c);
        }
        self.pivot = None;
        self.num_non_empty = 0;
        for k in 0..self.cfg.topics {
            self.recover_and_delete(k);
        }
    }

    /// (index, time) of the earliest (end = false) or latest (end = true) front; ties keep
    /// the lowest index, as the C++ `(t < time) ^ end` scan does.
    fn boundary(times: impl Iterator<Item = i64>, end: bool) -> (usize, i64) {
        let mut best = (0usize, 0i64);
        for (k, t) in times.enumerate() {
            if k == 0 || ((t < best.1) ^ end) {
                best = (k, t);
            }
        }
        best
    }

    fn candidate_boundary(&self, end: bool) -> (usize, i64) {
        Self::boundary(self.deques.iter().map(|d| d.front().expect("non-empty").0), end)
    }

    fn virtual_time(&self, i: usize) -> i64 {
        match self.deques[i].front() {
            Some(m) => m.0,
            None => {
                let last = self.past[i].last().expect("a candidate exists").0;
                (last + self.cfg.lower_bounds_ns[i]).max(self.pivot_time)
            }
        }
    }

    fn virtual_boundary(&self, end: bool) -> (usize, i64) {
        Self::boundary((0..self.cfg.topics).map(|i| self.virtual_time(i)), end)
    }

    fn scaled(&self, d: i64) -> i64 {
        ros_scale(d, 1.0 + self.cfg.age_penalty)
    }

    // The branches mirror approximate_time.h one for one (two of them publish alike).
    #[allow(clippy::if_same_then_else)]
    fn process(&mut self) {
        let n = self.cfg.topics;
        while self.num_non_empty == n {
            let (end_index, end_time) = self.candidate_boundary(true);
            let (start_index, start_time) = self.candidate_boundary(false);
            for k in 0..n {
                if k != end_index {
                    self.has_dropped[k] = false;
                }
            }
            match self.pivot {
                None => {
                    if self.cfg.max_interval_ns.is_some_and(|m| end_time - start_time > m) {
                        self.dequeue_delete_front(start_index);
                        continue;
                    }
                    if self.has_dropped[end_index] {
                        self.dequeue_delete_front(start_index);
                        continue;
                    }
                    self.make_candidate();
                    self.candidate_start = start_time;
                    self.candidate_end = end_time;
                    self.pivot = Some(end_index);
                    self.pivot_time = end_time;
                    self.move_front_to_past(start_index);
                }
                Some(_) => {
                    if self.scaled(end_time - self.candidate_end) >= start_time - self.candidate_start {
                        self.move_front_to_past(start_index);
                    } else {
                        self.make_candidate();
                        self.candidate_start = start_time;
                        self.candidate_end = end_time;
                        self.move_front_to_past(start_index);
                    }
                }
            }
            if Some(start_index) == self.pivot {
                self.publish_candidate();
            } else if self.scaled(end_time - self.candidate_end) >= self.pivot_time - self.candidate_start {
                self.publish_candidate();
            } else if self.num_non_empty < n {
                let mut moves = vec![0usize; n];
                loop {
                    let (_, vend) = self.virtual_boundary(true);
                    let (vstart_index, vstart) = self.virtual_boundary(false);
                    if self.scaled(vend - self.candidate_end) >= self.pivot_time - self.candidate_start {
                        self.publish_candidate();
                        break;
                    }
                    if self.scaled(vend - self.candidate_end) < vstart - self.candidate_start {
                        self.num_non_empty = 0;
                        for (k, m) in moves.iter().enumerate() {
                            self.recover_n(k, *m);
                        }
                        break;
                    }
                    self.move_front_to_past(vstart_index);
                    moves[vstart_index] += 1;
                }
            }
        }
    }
}

/// A synchronized set released by [`DeadlineSync`].
#[derive(Debug, Clone, PartialEq)]
pub struct SyncSet<T> {
    /// The reference message's stamp: the set's time.
    pub stamp: i64,
    /// One entry per topic, in topic order (the reference's own entry included).
    pub members: Vec<Option<(i64, T)>>,
    /// Released at its deadline with members missing.
    pub partial: bool,
    pub missing: Vec<usize>,
}

#[derive(Debug, Clone)]
pub struct DeadlineConfig {
    pub topics: usize,
    /// The topic whose messages open sets (e.g. the LiDAR).
    pub reference: usize,
    /// A member belongs to a set when |member − reference| ≤ this.
    pub tolerance_ns: i64,
    /// A set still incomplete at reference stamp + this is released partial.
    pub deadline_ns: i64,
    /// Messages kept per topic to fill later sets.
    pub buffer: usize,
}

/// Low-latency synchronizer driven by a reference topic: a set is released the moment every
/// member is present (the closest buffered message within tolerance of the reference), or
/// partial, listing what is missing, once its deadline passes (`poll`). Sets go out in
/// reference order; a message may belong to several sets (an IMU sample, say).
pub struct DeadlineSync<T: Clone> {
    cfg: DeadlineConfig,
    buffers: Vec<VecDeque<(i64, T)>>,
    pending: VecDeque<SyncSet<T>>,
    /// Per topic: whether a set waits for it. A topic known to be gone (a sensor in
    /// dropout) is not waited for, or every set would go out at its deadline, late.
    awaited: Vec<bool>,
}

impl<T: Clone> DeadlineSync<T> {
    pub fn new(cfg: DeadlineConfig) -> Self {
        assert!(cfg.reference < cfg.topics && cfg.buffer > 0);
        Self {
            buffers: (0..cfg.topics).map(|_| VecDeque::new()).collect(),
            pending: VecDeque::new(),
            awaited: vec![true; cfg.topics],
            cfg,
        }
    }

    /// Whether sets wait for `topic` (default: every topic). Sets that then lack only
    /// topics not waited for go out at the next `add` or `poll`, partial, naming them.
    pub fn set_awaited(&mut self, topic: usize, awaited: bool) {
        self.awaited[topic] = awaited;
    }

    /// Which topic opens sets from now on (sets already open keep their reference).
    pub fn set_reference(&mut self, topic: usize) {
        assert!(topic < self.cfg.topics);
        self.cfg.reference = topic;
    }

    pub fn reference(&self) -> usize {
        self.cfg.reference
    }

    fn closest(&self, topic: usize, stamp: i64) -> Option<(i64, T)> {
        self.buffers[topic]
            .iter()
            .filter(|(t, _)| (t - stamp).abs() <= self.cfg.tolerance_ns)
            .min_by_key(|(t, _)| (t - stamp).abs())
            .cloned()
    }

    /// Adds a message; returns the sets it completes (and any partial sets its stamp, as
    /// the newest time seen, pushes past their deadline).
    pub fn add(&mut self, topic: usize, stamp: i64, item: T) -> Vec<SyncSet<T>> {
        let buf = &mut self.buffers[topic];
        buf.push_back((stamp, item.clone()));
        if buf.len() > self.cfg.buffer {
            buf.pop_front();
        }
        if topic == self.cfg.reference {
            let mut set = SyncSet { stamp, members: vec![None; self.cfg.topics], partial: false, missing: vec![] };
            set.members[topic] = Some((stamp, item));
            for k in (0..self.cfg.topics).filter(|k| *k != topic) {
                set.members[k] = self.closest(k, stamp);
            }
            self.pending.push_back(set);
        } else {
            for i in 0..self.pending.len() {
                let ref_stamp = self.pending[i].stamp;
                if self.pending[i].members[topic].is_none() && (stamp - ref_stamp).abs() <= self.cfg.tolerance_ns {
                    self.pending[i].members[topic] = Some((stamp, item.clone()));
                }
            }
        }
        self.release(stamp)
    }

    /// Releases complete sets at the front, and partial ones whose deadline ≤ `now`.
    pub fn poll(&mut self, now: i64) -> Vec<SyncSet<T>> {
        self.release(now)
    }

    fn release(&mut self, now: i64) -> Vec<SyncSet<T>> {
        let mut out = vec![];
        while let Some(front) = self.pending.front() {
            let complete = front.members.iter().all(Option::is_some);
            let nothing_awaited_missing = front.members.iter().zip(&self.awaited).all(|(m, w)| m.is_some() || !w);
            if complete {
                out.push(self.pending.pop_front().expect("front exists"));
            } else if nothing_awaited_missing || front.stamp + self.cfg.deadline_ns <= now {
                let mut set = self.pending.pop_front().expect("front exists");
                set.partial = true;
                set.missing = (0..self.cfg.topics).filter(|k| set.members[*k].is_none()).collect();
                out.push(set);
            } else {
                break;
            }
        }
        out
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(cfg: ApproximateTimeConfig, input: &[(usize, i64)]) -> Vec<Vec<i64>> {
        let mut s = ApproximateTime::new(cfg);
        let mut out = vec![];
        for &(i, t) in input {
            for set in s.add(i, t, ()) {
                out.push(set.into_iter().map(|(t, _)| t).collect());
            }
        }
        out
    }

    #[test]
    fn ros_duration_scaling_rounds_like_ros() {
        assert_eq!(ros_scale(1_000_000_000, 1.1), 1_100_000_000);
        assert_eq!(ros_scale(3, 1.1), 3);
        assert_eq!(ros_scale(0, 1.1), 0);
    }

    fn deadline() -> DeadlineSync<&'static str> {
        DeadlineSync::new(DeadlineConfig { topics: 3, reference: 0, tolerance_ns: 20, deadline_ns: 100, buffer: 8 })
    }

    #[test]
    fn deadline_releases_when_complete_and_partial_at_the_deadline() {
        let mut s = deadline();
        assert!(s.add(1, 95, "cam").is_empty());
        assert!(s.add(0, 100, "lidar").is_empty()); // radar still missing
        let out = s.add(2, 110, "radar");
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].members, vec![Some((100, "lidar")), Some((95, "cam")), Some((110, "radar"))]);
        assert!(!out[0].partial);
        // No camera for the next one: released at its deadline, saying what is missing.
        assert!(s.add(0, 200, "lidar").is_empty());
        assert!(s.add(2, 205, "radar").is_empty());
        assert!(s.poll(299).is_empty());
        let out = s.poll(300);
        assert_eq!((out[0].stamp, out[0].partial, out[0].missing.clone()), (200, true, vec![1]));
        // Out of tolerance does not join.
        s.add(0, 400, "lidar");
        s.add(1, 450, "cam");
        assert_eq!(s.pending(), 1);
    }

    #[test]
    fn a_topic_not_awaited_does_not_hold_sets_to_their_deadline() {
        let mut s = deadline();
        s.set_awaited(1, false); // the camera is in dropout
        assert!(s.add(0, 100, "lidar").is_empty(), "radar still awaited");
        let out = s.add(2, 105, "radar");
        assert_eq!((out.len(), out[0].partial, out[0].missing.clone()), (1, true, vec![1]), "out at once, naming it");
        // A camera frame that does arrive still joins, and the set is then complete.
        s.add(1, 200, "cam");
        s.add(0, 200, "lidar");
        let out = s.add(2, 200, "radar");
        assert_eq!((out[0].partial, out[0].members[1].clone()), (false, Some((200, "cam"))));
        // Awaited again: back to waiting until the deadline.
        s.set_awaited(1, true);
        s.add(0, 300, "lidar");
        assert!(s.add(2, 300, "radar").is_empty() && s.poll(399).is_empty());
        assert_eq!(s.poll(400)[0].missing, vec![1]);
    }

    #[test]
    fn deadline_sets_go_out_in_reference_order() {
        let mut s = deadline();
        s.add(0, 100, "a");
        s.add(0, 150, "b");
        // The second set completes first, but waits behind the first until that one's deadline.
        assert!(s.add(1, 150, "c").is_empty() && s.add(2, 150, "r").is_empty());
        let out = s.poll(200);
        assert_eq!(out.iter().map(|x| (x.stamp, x.partial)).collect::<Vec<_>>(), vec![(100, true), (150, false)]);
    }

    /// The upstream message_filters test "ApproxTimeSync.ExactMatch": 2 topics,
    /// identical stamps, every pair matches.
    #[test]
    fn exact_match() {
        let mut input = vec![];
        for k in 0..5 {
            input.push((0, 1000 * k + 1));
            input.push((1, 1000 * k + 1));
        }
        let out = run(ApproximateTimeConfig::new(2, 10), &input);
        // Equal stamps: the set cannot get better, so each pair goes out at once.
        assert_eq!(out, (0..5).map(|k| vec![1000 * k + 1; 2]).collect::<Vec<_>>());
    }

    /// The upstream "PerfectMatch" picture: a at 0,3,6,… b at 1,4,7,…: each a pairs with
    /// the following b.
    #[test]
    fn perfect_match_pairs_neighbours() {
        let s = 1_000_000_000i64;
        let mut input = vec![];
        for k in 0..6 {
            input.push((0, 3 * k * s));
            input.push((1, (3 * k + 1) * s));
        }
        let out = run(ApproximateTimeConfig::new(2, 10), &input);
        assert_eq!(out[0], vec![0, s]);
        assert_eq!(out[1], vec![3 * s, 4 * s]);
    }
}

// Test oracle: the C++ ApproximateTime policy of ROS message_filters (Debian's
// libmessage-filters-dev, the ROS 1 port of the same algorithm), driven by text input.
//
// Input, one stream after another:
//   stream N QUEUE AGE_PENALTY MAX_INTERVAL_NS LB_0 ... LB_{N-1}
//   TOPIC STAMP_NS          (one line per message, arrival order)
//   end
// Output per stream: one line per emitted set (members' stamps in topic order), then "end".
#include <message_filters/synchronizer.h>
#include <message_filters/sync_policies/approximate_time.h>
#include <boost/make_shared.hpp>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

struct Msg {
  ros::Time stamp;
};
typedef boost::shared_ptr<Msg const> MsgConstPtr;

namespace ros {
namespace message_traits {
template <>
struct TimeStamp<Msg> {
  static ros::Time value(const Msg& m) { return m.stamp; }
};
}  // namespace message_traits
}  // namespace ros

using message_filters::NullType;
using message_filters::Synchronizer;
using message_filters::sync_policies::ApproximateTime;

static void print(const std::vector<MsgConstPtr>& v) {
  std::ostringstream o;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) o << ' ';
    o << v[i]->stamp.toNSec();
  }
  std::cout << o.str() << '\n';
}

// One Synchronizer type per topic count: M for real topics, NullType after.
template <int N>
struct Run {
  typedef typename boost::conditional<(N > 2), Msg, NullType>::type M2;
  typedef typename boost::conditional<(N > 3), Msg, NullType>::type M3;
  typedef typename boost::conditional<(N > 4), Msg, NullType>::type M4;
  typedef typename boost::conditional<(N > 5), Msg, NullType>::type M5;
  typedef typename boost::conditional<(N > 6), Msg, NullType>::type M6;
  typedef typename boost::conditional<(N > 7), Msg, NullType>::type M7;
  typedef typename boost::conditional<(N > 8), Msg, NullType>::type M8;
  typedef ApproximateTime<Msg, Msg, M2, M3, M4, M5, M6, M7, M8> Policy;
  typedef Synchronizer<Policy> Sync;

  static void cb(const MsgConstPtr& a, const MsgConstPtr& b, const boost::shared_ptr<M2 const>& c,
                 const boost::shared_ptr<M3 const>& d, const boost::shared_ptr<M4 const>& e,
                 const boost::shared_ptr<M5 const>& f, const boost::shared_ptr<M6 const>& g,
                 const boost::shared_ptr<M7 const>& h, const boost::shared_ptr<M8 const>& i) {
    std::vector<MsgConstPtr> v{a, b};
    const void* rest[] = {c.get(), d.get(), e.get(), f.get(), g.get(), h.get(), i.get()};
    for (int k = 0; k < N - 2; ++k) v.push_back(MsgConstPtr(MsgConstPtr(), static_cast<const Msg*>(rest[k])));
    print(v);
  }

  static void go(uint32_t queue, double age, int64_t max_ns, const std::vector<int64_t>& lb,
                 const std::vector<std::pair<int, int64_t> >& msgs) {
    Policy p(queue);
    p.setAgePenalty(age);
    if (max_ns > 0) p.setMaxIntervalDuration(ros::Duration().fromNSec(max_ns));
    for (int k = 0; k < N; ++k) p.setInterMessageLowerBound(k, ros::Duration().fromNSec(lb[k]));
    Sync sync(p);
    sync.registerCallback(boost::bind(&Run::cb, boost::placeholders::_1, boost::placeholders::_2,
                                      boost::placeholders::_3, boost::placeholders::_4, boost::placeholders::_5,
                                      boost::placeholders::_6, boost::placeholders::_7, boost::placeholders::_8,
                                      boost::placeholders::_9));
    for (size_t k = 0; k < msgs.size(); ++k) {
      boost::shared_ptr<Msg> m = boost::make_shared<Msg>();
      m->stamp.fromNSec(msgs[k].second);
      add(sync, msgs[k].first, m);
    }
  }

  static void add(Sync& s, int topic, const boost::shared_ptr<Msg>& m) {
    switch (topic) {
      case 0: s.template add<0>(m); break;
      case 1: s.template add<1>(m); break;
      case 2: addIf<2, M2>(s, m); break;
      case 3: addIf<3, M3>(s, m); break;
      case 4: addIf<4, M4>(s, m); break;
      case 5: addIf<5, M5>(s, m); break;
      case 6: addIf<6, M6>(s, m); break;
      case 7: addIf<7, M7>(s, m); break;
      case 8: addIf<8, M8>(s, m); break;
    }
  }
  template <int K, typename MK>
  static typename boost::enable_if<boost::is_same<MK, Msg> >::type addIf(Sync& s, const boost::shared_ptr<Msg>& m) {
    s.template add<K>(m);
  }
  template <int K, typename MK>
  static typename boost::disable_if<boost::is_same<MK, Msg> >::type addIf(Sync&, const boost::shared_ptr<Msg>&) {}
};

int main() {
  ros::Time::init();
  std::ios::sync_with_stdio(false);
  std::string word;
  while (std::cin >> word) {
    if (word != "stream") return 2;
    int n;
    uint32_t queue;
    double age;
    int64_t max_ns;
    std::cin >> n >> queue >> age >> max_ns;
    std::vector<int64_t> lb(n);
    for (int k = 0; k < n; ++k) std::cin >> lb[k];
    std::vector<std::pair<int, int64_t> > msgs;
    std::string tok;
    while (std::cin >> tok && tok != "end") {
      int64_t t;
      std::cin >> t;
      msgs.push_back(std::make_pair(std::stoi(tok), t));
    }
    switch (n) {
      case 2: Run<2>::go(queue, age, max_ns, lb, msgs); break;
      case 3: Run<3>::go(queue, age, max_ns, lb, msgs); break;
      case 4: Run<4>::go(queue, age, max_ns, lb, msgs); break;
      case 5: Run<5>::go(queue, age, max_ns, lb, msgs); break;
      case 6: Run<6>::go(queue, age, max_ns, lb, msgs); break;
      case 7: Run<7>::go(queue, age, max_ns, lb, msgs); break;
      case 8: Run<8>::go(queue, age, max_ns, lb, msgs); break;
      case 9: Run<9>::go(queue, age, max_ns, lb, msgs); break;
      default: return 2;
    }
    std::cout << "end\n";
  }
  return 0;
}

#    Licensed under the Apache License, Version 2.0 (the "License"); you may
#    not use this file except in compliance with the License. You may obtain
#    a copy of the License at
#
#         http://www.apache.org/licenses/LICENSE-2.0
#
#    Unless required by applicable law or agreed to in writing, software
#    distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
#    WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
#    License for the specific language governing permissions and limitations
#    under the License.
"""Where a request's provider summaries come from.

Nova drops Placement's provider summaries before filters and weighers run.
They come from:

1. the scheduler's own answer (option ``reuse_scheduler_query``, default
   on): :func:`install_capture` wraps the ``get_allocation_candidates``
   method of Nova's process-wide report client so each answer's summaries
   are kept on the calling thread, where Nova runs the filters and weighers
   right after. No extra Placement request, no second JSON decode. This
   relies on Nova's report client, not on a documented plugin API, so
   anything unexpected falls back to
2. one extra ``GET /allocation_candidates`` for the same request
   (restricted to the host's tree when one host is left).

:class:`SummarySource` chooses when Nova loads the plugins (before the
scheduler's first query, so the first request reuses Nova's answer too)
and logs its choice once.
"""

import collections
import functools
import threading
import time
import weakref

from oslo_log import log as logging

from nova_filters import conf

LOG = logging.getLogger(__name__)


class PlacementReadError(Exception):
    """Placement gave no usable provider summaries."""


# An answer the scheduler asked for more than this long ago on the same
# thread belongs to an earlier request. Nova decodes the answer and runs
# its own filters before ours: on a loaded machine that took 15 s of wall
# clock at 5,000 hosts, and a shorter horizon cost a second Placement
# request. An older answer of the same thread could only lie under a newer
# one (merged, newest wins): Nova runs no filter without its own answer.
CAPTURE_SECONDS = 60.0
# Answers kept per thread: Nova's select_destinations asks Placement at
# most twice per request (the PCPU query and its VCPU fallback). Older
# answers are dropped when a new one comes, whether or not a plugin took
# them, so what nobody consumes stays bounded by design.
MAX_CAPTURED = 2

_captured = threading.local()
_install_lock = threading.Lock()


class _Answers(collections.deque):
    """One thread's captured ``(asked_at, summaries)``."""
    __hash__ = object.__hash__


# Every thread's answers not taken yet, for unread_age; weak, so that a
# finished (green) thread's answers go with it.
_unread = weakref.WeakSet()
_answers_lock = threading.Lock()


def _capturing(get_allocation_candidates):
    """Wrap the report client's method to keep the provider summaries of
    the last MAX_CAPTURED answers on the calling thread.
    """
    @functools.wraps(get_allocation_candidates)
    def wrapper(*args, **kwargs):
        # When the query was sent: the usage it returns is no older.
        sent_at = time.monotonic()
        answer = get_allocation_candidates(*args, **kwargs)
        try:
            if answer and isinstance(answer[1], dict):
                with _answers_lock:
                    answers = getattr(_captured, 'answers', None)
                    if answers is None:
                        answers = _captured.answers = _Answers(
                            maxlen=MAX_CAPTURED)
                        _unread.add(answers)
                    answers.append((sent_at, answer[1]))
        except Exception:  # never let our bookkeeping fail Nova's query
            pass
        return answer
    wrapper.gpu_partitions_capture = True
    return wrapper


def install_capture():
    """Keep the summaries of the scheduler's own allocation-candidate
    queries; False when the report client cannot be had.
    """
    from nova.scheduler.client import report
    try:
        client = report.report_client_singleton()
    except Exception as error:
        LOG.debug('GPU partition scheduling: no report client to reuse '
                  '(%s); asking Placement once per request.', error)
        return False
    with _install_lock:
        current = client.get_allocation_candidates
        if not getattr(current, 'gpu_partitions_capture', False):
            client.get_allocation_candidates = _capturing(current)
    return True


def take_captured_summaries(roots=()):
    """``(summaries, age)``: the provider summaries captured on this thread
    in the last CAPTURE_SECONDS, and forgotten, and the seconds since the
    oldest answer they come from was asked for; None when there are none.
    The newest answer alone when it has every one of ``roots`` (Nova built
    its hosts from it), else the recent answers merged (newest wins).
    """
    answers = getattr(_captured, 'answers', None)
    if not answers:
        return None
    now = time.monotonic()
    with _answers_lock:
        recent = [(at, summaries) for at, summaries in answers
                  if at > now - CAPTURE_SECONDS]
        answers.clear()
    if not recent:
        return None
    newest_at, newest = recent[-1]
    if len(recent) == 1 or all(root in newest for root in roots):
        return newest, now - newest_at
    merged = {}
    for _, summaries in recent:
        merged.update(summaries)
    return merged, now - recent[0][0]


def unread_age():
    """Seconds since the oldest answer captured in the last
    CAPTURE_SECONDS on any thread, and not taken yet, was asked for; None
    when there is none.
    """
    now = time.monotonic()
    with _answers_lock:
        asked = [at for answers in _unread for at, _ in answers]
    asked = [at for at in asked if at > now - CAPTURE_SECONDS]
    return now - min(asked) if asked else None


def query_provider_summaries(spec_obj, host_states):
    """Provider summaries of the request's allocation candidates: the one
    extra Placement request.
    """
    # Imported here: only nova-scheduler needs these, and the simulator
    # imports the rest of the package without them.
    from nova import context as nova_context
    from nova.scheduler.client import report
    from nova.scheduler import utils as scheduler_utils

    resources = scheduler_utils.ResourceRequest.from_request_spec(
        spec_obj, enable_pinning_translate=True)
    if len(host_states) == 1:
        root_group = resources.get_request_group(None)
        if root_group.resources and not root_group.in_tree:
            root_group.in_tree = host_states[0].uuid
    client = report.report_client_singleton()
    answer = client.get_allocation_candidates(
        nova_context.get_admin_context(), resources)
    if not answer or answer[1] is None:
        raise PlacementReadError('no answer to GET /allocation_candidates')
    if not isinstance(answer[1], dict):
        raise PlacementReadError('provider_summaries is not an object')
    return answer[1]


class SummarySource:
    """The provider summaries of one request.

    ``capture``: reuse the scheduler's own answer when the
    ``reuse_scheduler_query`` option allows (the scheduler process);
    ``query`` asks Placement (replaceable: the simulator's answers its
    in-memory Placement). ``query_without_gpu``: requests without GPU may
    use ``query`` too (only where it is free, as in the simulator).
    """

    def __init__(self, query=query_provider_summaries, capture=False,
                 query_without_gpu=False):
        self._query = query
        self._capture = capture
        self._query_without_gpu = query_without_gpu
        self._lock = threading.Lock()
        self._started = False

    def start(self):
        """Install the capture when Nova loads a plugin and log, once,
        where GPU usage will come from.
        """
        captured = self._capturing()
        with self._lock:
            first, self._started = not self._started, True
        if not first or not self._capture:
            return
        if captured:
            LOG.info('GPU partition scheduling: reading GPU usage from the '
                     'scheduler\'s own allocation-candidate answers.')
        else:
            LOG.info('GPU partition scheduling: asking Placement once more '
                     'per GPU request for GPU usage '
                     '(reuse_scheduler_query off or no report client).')

    def summaries(self, spec_obj, host_states, roots, wants_gpu=True):
        """``(summaries, age)``: the captured answer when it covers
        ``roots``, else the query's (for a request without GPU, only where
        the query is free; age 0), summaries None when there is none.
        ``age``: the seconds since the answer was asked for.
        """
        if self._capturing():
            captured = take_captured_summaries(roots)
            # Not roots.isdisjoint(summaries): that walks every provider.
            if captured is not None and any(
                    root in captured[0] for root in roots):
                return captured
        if wants_gpu or self._query_without_gpu:
            return self._query(spec_obj, host_states), 0.0
        return None, 0.0

    def _capturing(self):
        return bool(self._capture and conf.CONF.gpu_partitions_scheduler
                    .reuse_scheduler_query and install_capture())

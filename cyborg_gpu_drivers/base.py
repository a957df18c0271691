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
"""The scan skeleton every driver of this package shares.

Cyborg's agent calls ``discover()`` and nothing else; Cyborg's conductor
deletes whatever a report omits, and one exception in the agent or in the
conductor's ``report_data`` loses the report of the whole host. So the
skeleton here, not each driver, guarantees for every exception type:

* per-GPU containment: a driver reads each GPU through :meth:`contained`;
  whatever one GPU raises, or a read that outlasts ``[gpu_partitions]
  gpu_scan_timeout``, costs that GPU alone;
* nothing that may hold a guest is omitted: a GPU reported before, or that
  sysfs shows bound to the driver's kernel driver (:meth:`bound_gpus`; a
  PF whose ``vendor`` cannot be read counts when anything else says it may
  be the driver's), that this scan could not read is sent again as
  unhealthy (its last
  report, offering only what is used) or, never read since the agent
  started, as a Cyborg stub (Cyborg then keeps what it holds for it);
* unknown state counts as in use: units a GPU marks unknown
  (:attr:`inventory.Gpu.unknown_units`) keep the in-use handles of its
  last report;
* an unhealthy GPU's providers never go below what Placement has
  allocated on them (:meth:`allocated_units`), so Cyborg's conductor
  never has to delete a provider holding allocations, which raises
  ``ResourceProviderInUse`` and aborts the whole host's report;
* changes to the hardware (MIG layouts, vGPU types) are an explicit step,
  :meth:`apply`, run before each scan unless the driver is read only,
  contained like a scan, and idempotent so a failed step is retried at the
  next pass;
* units held by guests Cyborg did not bind (guests that ran before the
  host's providers existed, allocations lost) are reserved in Placement
  (:meth:`_reserve_busy_units`), counted from what holds them and never
  netted against claims whose guests have not started, so Placement never
  offers a unit Cyborg cannot bind; units in use when their provider
  first appears get no attach handle in Cyborg until they are freed
  (:meth:`_without_held_outside`), so Cyborg binds them once freed and
  not before.

A driver implements :meth:`bound_gpus`, :meth:`stub_gpu`,
:meth:`open_session` and :meth:`scan`, and :meth:`apply` if it changes
anything. A scan that needs the bound GPUs asks :meth:`scan_bound_gpus`,
so that sysfs is walked once per scan.
"""

import contextlib
import dataclasses
import socket
import threading
import urllib.parse
import uuid

from cyborg.accelerator.drivers import driver as cyborg_driver
from oslo_config import cfg
from oslo_log import log as logging

from cyborg_gpu_drivers import conf  # noqa: F401  (registers the options)
from cyborg_gpu_drivers import inventory
from cyborg_gpu_drivers import providers
from cyborg_gpu_drivers import report
import placement_traits

LOG = logging.getLogger(__name__)
CONF = cfg.CONF


def agent_hostname():
    """The compute node provider name Cyborg's agent reports under."""
    try:
        name = CONF.agent.resource_provider_name
    except cfg.NoSuchOptError:
        name = None
    return name or CONF.host or socket.getfqdn()


class ScanTimeout(Exception):
    """A read outlasted ``[gpu_partitions] gpu_scan_timeout``."""


class ReadAborted(Exception):
    """A read ended its worker thread with a :class:`BaseException` that
    is not an :class:`Exception` (``SystemExit``, ``KeyboardInterrupt``,
    ``GeneratorExit``, a cancellation): a fault of that read, since no
    signal reaches a worker thread, contained like any other.
    """


class ProviderInUse(Exception):
    """A provider has, or just got, an allocation: its GPU stays as it is.
    """


class Notes:
    """Log each problem once while it lasts, not at every scan."""

    def __init__(self, prefix):
        self._prefix = prefix
        self._before = set()
        self._now = set()

    def __call__(self, message, log=LOG.warning):
        # Once per scan too: the same line for eight GPUs is one line.
        if message not in self._before and message not in self._now:
            log('%s: %s', self._prefix, message)
        self._now.add(message)

    def end_scan(self):
        self._before, self._now = self._now, set()


def provider_uuid(provider_name):
    """The UUID Cyborg's conductor gives a deployable's provider."""
    return uuid.uuid3(uuid.NAMESPACE_DNS, provider_name)


def _placement_client():
    # Cyborg's own client, with the agent's [placement] options.
    from cyborg.common import placement_client
    return placement_client.PlacementClient()


def _placement_json(response):
    """The body of a 200 answer; None for a 404; raises otherwise."""
    if response is None or response.status_code == 404:
        return None
    if response.status_code != 200:
        raise RuntimeError('Placement answered %s' % response.status_code)
    return response.json()


class GpuPartitionDriver(cyborg_driver.GenericDriver):
    """A Cyborg driver whose logic is plain Python over a HostInventory.

    ``read_only`` drivers never change the hardware: the ``gpu-partitions
    inventory`` check builds them so.
    """

    #: Cyborg's ``driver_name`` on every deployable.
    DRIVER_NAME = None
    #: What :meth:`contained` answers for a read that failed, by default.
    FAILED = object()
    #: What :meth:`scan` answers for a GPU whose state is unknown for a
    #: while (a service it needs is down): a stub even if reported before.
    STUB = object()

    def __init__(self, hostname=None, read_only=False):
        self._hostname = hostname
        self.read_only = read_only
        self.note = Notes(self.DRIVER_NAME)
        # address -> the Gpu last reported from a good read.
        self._known = {}
        # GPUs this driver read and found to be another driver's (a MIG
        # GPU for the vGPU driver, say): that driver answers for them.
        self._declined = set()
        # key -> the worker thread of a read that outlasted its bound.
        self._stuck = {}
        # What bound_gpus() answered to this collect's scan, if it asked.
        self._scan_bound = None
        self._last_good = []
        # Whether discover() reserves busy units in Placement: the agent's
        # drivers do; checks and tools that only print a report do not.
        self.reserves_in_placement = True
        # provider name -> units this agent saw reserved in Placement; a
        # provider not listed is asked once (a restart forgets).
        self._reserved = {}
        # (provider name, handle identity) of units held by guests Cyborg
        # did not bind, left out of the report (see _without_held_outside).
        self._held_outside = set()
        # provider name -> units a previous agent reserved that this one
        # cannot tell apart (see _reserve_busy_units); 0 for a provider
        # this agent saw appear.
        self._reserved_before = {}
        # provider name -> units busy at this agent's first scan of it.
        self._busy_first = {}

    @property
    def hostname(self):
        return self._hostname or agent_hostname()

    # --- what a driver implements -----------------------------------------

    def bound_gpus(self):
        """Addresses of the PFs sysfs shows bound to our kernel driver."""
        return []

    def scan_bound_gpus(self):
        """:meth:`bound_gpus`, for :meth:`scan`: the skeleton then takes
        the same list rather than walking sysfs again.
        """
        self._scan_bound = self.bound_gpus()
        return self._scan_bound

    def stub_gpu(self, address):
        """The :class:`inventory.Gpu` stub of a GPU that cannot be read."""
        raise NotImplementedError

    def open_session(self):
        """A context manager for one scan (an NVML session)."""
        return contextlib.nullcontext()

    def scan(self, session):
        """``{address: Gpu, or None for a GPU that is not ours}``.

        Read each GPU with :meth:`contained`; a GPU left out of the result
        is reported from its last report or as a stub.
        """
        raise NotImplementedError

    def apply(self):
        """Bring the hardware to the declared state; idempotent.

        Called before each scan unless the driver is read only; whatever
        it raises is logged and retried at the next pass.
        """

    # --- the skeleton ------------------------------------------------------

    def known_gpu(self, address):
        return self._known.get(address)

    def bounded(self, key, function, *args):
        """``function(*args)`` within ``gpu_scan_timeout`` seconds.

        Runs in a worker thread; what it raises is raised here, a
        :class:`BaseException` that is not an :class:`Exception` as
        :class:`ReadAborted`. Past the bound, :class:`ScanTimeout` is
        raised and the worker is left to finish alone. While it has not, a
        new read of ``key`` is refused at once, so a hung GPU costs one
        thread, not one per scan.
        """
        stuck = self._stuck.get(key)
        if stuck is not None:
            if stuck.is_alive():
                raise ScanTimeout('%s: an earlier read still has not '
                                  'returned' % key)
            del self._stuck[key]
        outcome = {}

        def work():
            try:
                outcome['value'] = function(*args)
            except BaseException as error:
                outcome['error'] = error

        worker = threading.Thread(target=work, daemon=True,
                                  name='%s %s' % (self.DRIVER_NAME, key))
        worker.start()
        worker.join(CONF.gpu_partitions.gpu_scan_timeout)
        if worker.is_alive():
            self._stuck[key] = worker
            raise ScanTimeout('%s: no answer within %ss (option [%s] '
                              'gpu_scan_timeout)' % (
                                  key, CONF.gpu_partitions.gpu_scan_timeout,
                                  'gpu_partitions'))
        if 'error' not in outcome:
            return outcome['value']
        error = outcome['error']
        if isinstance(error, Exception):
            raise error
        # The operator's Ctrl-C or stop reaches the caller's thread (this
        # one) and propagates; one raised by the read's own code would
        # otherwise end the whole report, or the agent.
        raise ReadAborted('%s: the read ended with %s: %s'
                          % (key, type(error).__name__, error)) from error

    def contained(self, key, function, *args, failed=None):
        """:meth:`bounded`, but any exception is noted and ``failed``
        returned: one GPU's fault never reaches another's.
        """
        try:
            return self.bounded(key, function, *args)
        except Exception as error:
            self.note('%s cannot be read: %s: %s; reported as unknown'
                      % (key, type(error).__name__, error), LOG.error)
            return failed

    def collect(self):
        """Scan the hardware and return a :class:`inventory.HostInventory`.

        Never raises for a fault of the hardware or of the driver's code.
        """
        try:
            gpus = self._collect()
        finally:
            self.note.end_scan()
        return inventory.HostInventory(hostname=self.hostname, gpus=gpus)

    def _collect(self):
        found = {}
        whole_scan_failed = False
        self._scan_bound = None
        try:
            session = self.open_session()
            opened = self.bounded('opening the scan', session.__enter__)
            try:
                found = self.scan(opened)
            finally:
                self.contained('closing the scan', session.__exit__,
                               None, None, None)
        except Exception as error:
            whole_scan_failed = True
            self.note('the scan failed (%s: %s); GPUs reported before are '
                      'sent again as stubs, GPUs sysfs shows as stubs'
                      % (type(error).__name__, error), LOG.error)
        bound = self._scan_bound
        if bound is None:
            bound = self.contained('the sysfs scan', self.bound_gpus,
                                   failed=[])
        gpus = []
        self._declined = (self._declined | {
            address for address, gpu in found.items() if gpu is None}) - {
            address for address, gpu in found.items() if gpu is not None}
        for address in sorted(set(found) | set(self._known) | set(bound)):
            gpu = found.get(address, self.FAILED)
            if (gpu is self.FAILED or gpu is self.STUB) and (
                    address in self._declined
                    and address not in self._known):
                gpu = None
            elif gpu is self.FAILED or gpu is self.STUB:
                gpu = self._unreadable(address,
                                       whole_scan_failed or gpu is self.STUB)
            elif gpu is not None:
                gpu = self._with_units_in_use(gpu)
            if gpu is not None:
                gpus.append(gpu)
        # A GPU sent as a stub stays known with its last good report.
        self._known = {gpu.address: gpu if not gpu.stub
                       else self._known.get(gpu.address) for gpu in gpus}
        self._known = {address: gpu for address, gpu in self._known.items()
                       if gpu is not None}
        self._keep_allocated([gpu for gpu in gpus if not gpu.healthy
                              and not gpu.stub])
        return gpus

    def _unreadable(self, address, transient):
        known = self._known.get(address)
        if known is not None and transient:
            # A transient failure changes nothing in Cyborg.
            return dataclasses.replace(known, stub=True)
        if known is None:
            self.note('GPU %s cannot be read and was not reported since the '
                      'agent started: reported as a stub so Cyborg keeps '
                      'what it holds for it' % address, LOG.error)
            stub = self.contained(address, self.stub_gpu, address)
            if stub is None:
                stub = inventory.Gpu(address=address, vendor_id='',
                                     device_id='', model='unknown',
                                     memory_mib=0, healthy=False, stub=True)
            return stub
        self.note('GPU %s stopped answering: no longer offered; its units '
                  'in use or allocated stay reported' % address, LOG.error)
        return dataclasses.replace(known, healthy=False)

    def _with_units_in_use(self, gpu):
        known = self._known.get(gpu.address)
        if known is None or not gpu.unknown_units:
            return gpu
        return inventory.keep_units_in_use(known, gpu)

    # --- allocations of unhealthy GPUs ------------------------------------

    def _keep_allocated(self, unhealthy):
        for gpu in unhealthy:
            for slice_ in gpu.slices:
                name = providers.provider_name(self.hostname, gpu, slice_)
                slice_.allocated = self.contained(
                    'Placement usages of %s' % name, self.allocated_units,
                    name, slice_.resource_class)

    def allocated_units(self, provider_name, resource_class):
        """Units Placement has allocated on a provider, None if unknown.

        Asked through Cyborg's own Placement client (``[placement]`` of
        the agent's configuration); unknown keeps the provider's whole
        last total, never less than what is allocated.
        """
        usages = _placement_json(_placement_client().get(
            '/resource_providers/%s/usages' % provider_uuid(provider_name)))
        if usages is None:
            return 0
        return int(usages['usages'].get(resource_class, 0))

    # --- units in use without allocations --------------------------------

    def _without_held_outside(self, host_inventory):
        """``host_inventory`` without the attach handles of units held by
        guests Cyborg did not bind.

        Cyborg's conductor stores an attach handle with the ``in_use`` of
        the report that first lists it and never updates it from later
        reports (``drv_ah_make_diff`` compares ``attach_info`` only, and
        only an ARQ's unbind frees a handle). A unit busy when its
        provider first appeared (an adopted host) would thus stay in use
        in Cyborg after its guest went away, and a boot Placement lets
        through would fail at the bind. So such a unit (in use while its
        provider is not in Placement yet, so no ARQ can hold it) is left
        out of the report's attach handles for as long as the hardware
        shows it busy: Cyborg has no handle for it and cannot bind it,
        Placement holds it reserved (:meth:`_reserve_busy_units`), the
        provider's total still counts it. Once it is free it is reported,
        and the conductor adds it as a free handle Cyborg can bind.

        Nothing once reported is left out: the conductor deletes a handle
        that disappears by looking it up with a filter Cyborg's database
        API ignores (``attach_info`` is not among the exact-match filters
        of ``attach_handle_get_by_filters``), so it would delete another
        handle of the deployable, maybe a bound one. When Placement cannot
        say whether a provider with busy units exists, its GPU is sent as
        a stub for this scan (Cyborg changes nothing for it): reported in
        use, a unit no ARQ holds would stay in use in Cyborg for ever. A
        restart of the agent forgets which units were held: a unit still
        busy then is reported in use and stays in use in Cyborg after it
        is freed (:meth:`_reserve_busy_units` keeps it reserved).
        """
        held = set()
        gpus = []
        for gpu in host_inventory.gpus:
            names = [providers.provider_name(host_inventory.hostname, gpu,
                                             slice_) for slice_ in gpu.slices]
            held_here = set()
            slices = None if gpu.stub else self._reportable_slices(
                gpu, names, held_here)
            if slices is None:
                # Cyborg changes nothing for a stub: what was held stays
                # held.
                held.update(key for key in self._held_outside
                            if key[0] in names)
                gpus.append(dataclasses.replace(gpu, stub=True))
                continue
            held |= held_here
            gpus.append(dataclasses.replace(gpu, slices=slices))
        for name, *_identity in sorted(self._held_outside - held):
            LOG.info('%s: %s: a unit held by a guest Cyborg did not bind '
                     'is free; reported to Cyborg, which can bind it now',
                     self.DRIVER_NAME, name)
        self._held_outside = held
        return dataclasses.replace(host_inventory, gpus=gpus)

    def _reportable_slices(self, gpu, names, held):
        """The slices of a GPU as reported, or None when Placement cannot
        say whether a provider holding busy units exists.
        """
        slices = []
        for name, slice_ in zip(names, gpu.slices):
            handles = self._reportable_handles(name, slice_, held)
            if handles is None:
                return None
            reported = dataclasses.replace(slice_, handles=handles)
            if slice_.allocated is not None:
                # An unhealthy GPU offers its units in use
                # (inventory.offered_total): held ones still count.
                reported.allocated = max(slice_.allocated, slice_.in_use)
            slices.append(reported)
        return slices

    def _reportable_handles(self, name, slice_, held):
        new_provider = None
        handles = []
        left_out = 0
        for handle in slice_.handles:
            key = (name, handle.attach_type, handle.address, handle.mark)
            if handle.in_use and key not in self._held_outside:
                if new_provider is None:
                    exists = self.contained(
                        'Placement provider %s' % name,
                        self.provider_in_placement, name)
                    if exists is None:
                        return None
                    new_provider = not exists
                if not new_provider:
                    handles.append(handle)
                    continue
                left_out += 1
            elif not handle.in_use:
                handles.append(handle)
                continue
            held.add(key)
        if left_out:
            LOG.warning('%s: %s: %d units are in use by guests Cyborg did '
                        'not bind (they ran before the provider existed); '
                        'Cyborg gets no attach handle for them until they '
                        'are freed', self.DRIVER_NAME, name, left_out)
        return handles

    def _reserve_busy_units(self, host_inventory):
        """Make each provider's ``reserved`` the units held by guests
        Cyborg did not bind, so Placement offers only units Cyborg can
        bind to a free VF or mdev.

        Placement's usage counts claims, not guests: a claim whose guest
        has not started yet (allocation written, ARQ bound or binding, the
        unit not busy yet) is in the usage and not in the busy units, so
        ``busy - usage`` lets each such claim hide one unit held outside,
        and Placement offers units that do not exist. The reservation is
        therefore counted from what holds units outside Cyborg, never
        netted against claims::

            reserved = min(total, held + max(reserved_before,
                                             busy - held - usage, 0))

        * ``held``: units this agent knows by identity
          (:meth:`_without_held_outside`: busy when their provider first
          appeared, still busy). Exact while the agent runs; freed units
          leave it and their reservation goes with them.
        * ``busy - held - usage``: busy units beyond every claim hold no
          allocation whatever else is unknown (allocations lost, guests
          the agent cannot name). A lower bound only: a claim whose guest
          has not started hides one of them.
        * ``reserved_before``: after an agent restart ``held`` is empty,
          and the units it held are reported in use on their first report
          and stay in use in Cyborg for ever (see
          :meth:`_without_held_outside`). What the last agent reserved,
          read back from Placement at this agent's first read of the
          provider, is the only record of them: it stays for the
          provider's life, because Cyborg will not bind those units even
          once their guests stop. It is capped at the units busy at this
          agent's first scan of the provider: the held units still busy
          then are the ones it reports in use, and a reservation that
          holds no busy unit (a hold :meth:`provider_held` could not put
          back, an operator's) is not carried for ever. Limit: units that
          an agent before the last one reported in use and that are free
          at this agent's first scan escape the cap. A provider this
          agent saw appear carries nothing (0).

        Placement unreadable, or the write refused (a claim landed since
        the read: the generation changed), writes nothing: what Placement
        holds reserved stays until a scan reads it. Cyborg's conductor
        writes inventories without ``reserved`` (resetting it) when a
        total changes, so this runs at every scan for providers with
        units in use or reserved. A provider not in Placement yet is done
        at the next scan.
        """
        for gpu in host_inventory.gpus:
            if gpu.stub:
                continue
            for slice_ in providers.offered_slices(gpu):
                spec = providers.provider_spec(host_inventory.hostname, gpu,
                                               slice_)
                first_busy = self._busy_first.setdefault(spec.name,
                                                         spec.reserved)
                if not spec.reserved and self._reserved.get(spec.name) == 0:
                    continue
                held = sum(1 for key in self._held_outside
                           if key[0] == spec.name)
                self.contained('Placement inventory of %s' % spec.name,
                               self._reserve, spec.name, spec.resource_class,
                               spec.reserved, held, first_busy)

    def _reserve(self, name, resource_class, busy, held, first_busy):
        found = self.placement_inventory(name, resource_class)
        if found is None:
            # Not in Placement: this agent sees it appear, so whatever
            # holds its units from then on is known by identity.
            self._reserved.pop(name, None)
            self._reserved_before[name] = 0
            return
        used, record = found
        reserved = record.get('reserved', 0)
        before = self._reserved_before.setdefault(
            name, min(reserved, first_busy))
        beyond_claims = max(0, busy - held - used)
        wanted = min(held + max(before, beyond_claims), record['total'])
        if wanted != reserved:
            self.set_reserved(name, resource_class, record, wanted)
            if wanted > reserved:
                LOG.warning(
                    '%s: %s: units in use hold no allocation in Placement '
                    '(%d held by guests that ran before the provider '
                    'existed, %d reserved before the agent started, %d '
                    'busy beyond its %d claims); %d reserved in Placement '
                    'until freed', self.DRIVER_NAME, name, held, before,
                    beyond_claims, used, wanted)
            else:
                LOG.info('%s: %s: units in use without an allocation '
                         'freed; %d reserved in Placement (was %d)',
                         self.DRIVER_NAME, name, wanted, reserved)
        self._reserved[name] = wanted

    def provider_in_placement(self, provider_name):
        """Whether Placement has the provider (Cyborg's conductor makes
        a deployable's provider when it first stores the deployable).
        """
        return _placement_json(_placement_client().get(
            '/resource_providers/%s' % provider_uuid(provider_name))) \
            is not None

    def placement_inventory(self, provider_name, resource_class):
        """``(units used, inventory record)`` of a provider's resource
        class in Placement; None when Placement has no such inventory.
        """
        client = _placement_client()
        path = '/resource_providers/%s' % provider_uuid(provider_name)
        inventories = _placement_json(client.get(path + '/inventories'))
        if inventories is None or \
                resource_class not in inventories['inventories']:
            return None
        record = dict(inventories['inventories'][resource_class])
        record['resource_provider_generation'] = inventories[
            'resource_provider_generation']
        usages = _placement_json(client.get(path + '/usages')) or {}
        return int(usages.get('usages', {}).get(resource_class, 0)), record

    def placement_gpu_providers(self, address):
        """``{provider name: {resource class: (units used, inventory
        record)}}`` of the providers Placement has for the GPU at
        ``address`` on this host: those under this host's compute node
        provider that carry the GPU's physical-GPU trait. Empty when
        Placement has no compute node of this host's name.
        """
        client = _placement_client()
        roots = _placement_json(client.get(
            '/resource_providers?name=%s' % urllib.parse.quote(
                self.hostname), version='1.18'))
        roots = (roots or {}).get('resource_providers', [])
        if not roots:
            return {}
        listed = _placement_json(client.get(
            '/resource_providers?in_tree=%s&required=%s' % (
                roots[0]['uuid'], placement_traits.physical_gpu_trait(
                    address)), version='1.18'))
        found = {}
        for provider in (listed or {}).get('resource_providers', []):
            path = '/resource_providers/%s' % provider['uuid']
            inventories = _placement_json(
                client.get(path + '/inventories')) or {}
            usages = (_placement_json(client.get(path + '/usages'))
                      or {}).get('usages', {})
            found[provider['name']] = {
                resource_class: (int(usages.get(resource_class, 0)),
                                 dict(record))
                for resource_class, record in inventories.get(
                    'inventories', {}).items()}
        return found

    def set_reserved(self, provider_name, resource_class, record, reserved):
        """PUT the inventory ``record`` back with ``reserved``; a conflict
        (the provider changed since it was read) is retried next scan.

        Microversion 1.26: before it Placement refuses ``reserved`` equal
        to ``total`` (a capacity of 0), which holding every unit needs.
        """
        body = dict(record, reserved=reserved)
        response = _placement_client().put(
            '/resource_providers/%s/inventories/%s' % (
                provider_uuid(provider_name), resource_class), body,
            version='1.26')
        if response.status_code != 200:
            raise RuntimeError('Placement answered %s to the inventory of '
                               '%s' % (response.status_code, provider_name))

    # --- changing what an idle GPU offers --------------------------------

    @contextlib.contextmanager
    def provider_held(self, provider_name, resource_class):
        """Hold a provider with no allocation closed in Placement while
        its GPU changes kind, so no claim can be stranded.

        ``reserved`` is set to ``total`` with the generation read along
        with the usage: a claim that lands after that read bumps the
        generation and the write fails (409); one that lands before is in
        the usage read after the write. Either aborts
        (:class:`ProviderInUse`) and nothing changes. If the hold write
        or the change fails, whatever it raised, ``reserved`` is put back
        (a write that timed out may have landed); if the change succeeds
        it stays: the provider leaves with this pass's report (its kind
        is gone) and must take no claim before Cyborg's conductor deletes
        it. A provider Placement does not have cannot be claimed: nothing
        to hold.
        """
        found = self.placement_inventory(provider_name, resource_class)
        if found is None:
            yield
            return
        used, record = found
        if used:
            raise ProviderInUse('%s has %d units allocated in Placement'
                                % (provider_name, used))
        before = record.get('reserved', 0)
        try:
            self.set_reserved(provider_name, resource_class, record,
                              record['total'])
            found = self.placement_inventory(provider_name, resource_class)
            if found is None or found[0]:
                raise ProviderInUse('%s was claimed while it was being '
                                    'held' % provider_name)
            yield
        except BaseException:
            self.contained('Placement inventory of %s' % provider_name,
                           self._restore_reserved, provider_name,
                           resource_class, before)
            raise
        self._reserved[provider_name] = record['total']

    def _restore_reserved(self, provider_name, resource_class, reserved):
        # Forgotten first: should this fail, the next scan's
        # _reserve_busy_units asks Placement and sets it right.
        self._reserved.pop(provider_name, None)
        found = self.placement_inventory(provider_name, resource_class)
        if found is not None and found[1].get('reserved', 0) != reserved:
            self.set_reserved(provider_name, resource_class, found[1],
                              reserved)

    # --- Cyborg's driver API -----------------------------------------------

    def discover(self):
        if not self.read_only:
            self.contained('applying the declared state', self.apply)
        try:
            host_inventory = self.collect()
            if self.reserves_in_placement:
                reported = self._without_held_outside(host_inventory)
            else:
                reported = host_inventory
            devices = report.to_driver_devices(reported, self.DRIVER_NAME)
        except Exception:
            LOG.exception('%s: building the report failed; re-sending the '
                          'last good report of %d GPUs as stubs so nothing '
                          'is removed from Placement', self.DRIVER_NAME,
                          len(self._last_good))
            for device in self._last_good:
                device.stub = True
            return list(self._last_good)
        self._last_good = devices
        if self.reserves_in_placement:
            self._reserve_busy_units(host_inventory)
        return devices

    def update(self, control_path, image_path):
        # GPUs get no firmware through Cyborg.
        return False

    def get_stats(self):
        return {}

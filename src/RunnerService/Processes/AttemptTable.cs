using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace RunnerService.Processes;

/// <summary>How a local claim of an invocation's attempt came out (<see cref="AttemptTable{TSession}.TryClaim"/>).</summary>
enum LocalClaim
{
    /// <summary>The attempt is now held here by the caller, who must start it or release it.</summary>
    Granted,

    /// <summary>A delivery of this invocation (this attempt or another) is held here already: claimed, running or paused.</summary>
    Held,

    /// <summary>This attempt, or a later one, ran to its end here within <see cref="AttemptTable{TSession}.FinishedMemory"/>.</summary>
    FinishedHere,
}

/// <summary>
/// This replica's one record of what it holds of each invocation, under one lock: the attempt a delivery has claimed
/// here, that attempt's worker session once it started (running or paused), and the last attempt that ran to its end
/// here. Every local ownership question reads it: a duplicate delivery, a newer attempt of something still here, a
/// resume of a worker no longer here, an owner of record that lost its worker. The saga's owner and attempt are the
/// record across replicas; this table is one replica's side of that record, never a second opinion about it.
/// </summary>
/// <remarks>
/// An entry moves <c>claimed → live → finished</c> (or back to nothing when a claim is released unstarted or a worker
/// is taken away unfinished). Finished attempts are remembered for <see cref="FinishedMemory"/>, at most
/// <see cref="FinishedCapacity"/> of them (about 10 MB), and forgotten oldest first: each call costs O(1).
/// Generic over the session so it can be tested without worker processes.
/// </remarks>
sealed class AttemptTable<TSession>(TimeProvider time) where TSession : class
{
    public static readonly TimeSpan FinishedMemory = TimeSpan.FromMinutes(5);
    const int FinishedCapacity = 200_000;

    /// <summary>A value in the table (no allocation per invocation on the hot path), changed in place by reference.</summary>
    struct Entry
    {
        /// <summary>The attempt held here (claimed or live), 0 when none.</summary>
        public int Held;

        /// <summary>The held attempt's worker, once started.</summary>
        public TSession? Session;

        /// <summary>The last attempt that ran to its end here, 0 when none or forgotten.</summary>
        public int Finished;

        public DateTimeOffset FinishedAt;

        public readonly bool IsEmpty => Held == 0 && Finished == 0;
    }

    readonly Lock _lock = new();
    readonly Dictionary<Guid, Entry> _entries = [];
    readonly Dictionary<Guid, TSession> _live = [];
    readonly Queue<(Guid Id, DateTimeOffset At)> _finishedOrder = new();

    /// <summary>
    /// Claims <paramref name="attempt"/> of the invocation for one delivery. Granted only when nothing of the invocation
    /// is held here and that attempt has not finished here; on <see cref="LocalClaim.Held"/>, <paramref name="heldAttempt"/>
    /// and <paramref name="session"/> (null while not started) say what holds it.
    /// </summary>
    public LocalClaim TryClaim(Guid invocationId, int attempt, out int heldAttempt, out TSession? session)
    {
        lock (_lock)
        {
            heldAttempt = 0;
            session = null;
            ref var entry = ref CollectionsMarshal.GetValueRefOrAddDefault(_entries, invocationId, out _);
            if (entry.Held != 0)
            {
                heldAttempt = entry.Held;
                session = entry.Session;
                return LocalClaim.Held;
            }
            if (RecentlyFinished(entry, attempt))
                return LocalClaim.FinishedHere;
            entry.Held = attempt;
            return LocalClaim.Granted;
        }
    }

    /// <summary>Gives up a claim of <paramref name="attempt"/> that never started a worker (or whose worker is gone already).</summary>
    public void Release(Guid invocationId, int attempt)
    {
        lock (_lock)
        {
            ref var entry = ref CollectionsMarshal.GetValueRefOrNullRef(_entries, invocationId);
            if (!Unsafe.IsNullRef(ref entry) && entry.Held == attempt && entry.Session is null)
            {
                entry.Held = 0;
                if (entry.IsEmpty)
                    _entries.Remove(invocationId);
            }
        }
    }

    /// <summary>The held attempt's worker has started.</summary>
    public void Started(Guid invocationId, int attempt, TSession session)
    {
        lock (_lock)
        {
            ref var entry = ref CollectionsMarshal.GetValueRefOrAddDefault(_entries, invocationId, out _);
            entry.Held = attempt;
            entry.Session = session;
            _live[invocationId] = session;
        }
    }

    /// <summary>
    /// The worker of <paramref name="session"/> is done with the invocation: it ran to its end (<paramref name="finished"/>,
    /// remembered), or it was taken away (the attempt is forgotten here: its redelivery must be able to run it). False when
    /// the session was not held here (ended already): the caller then has nothing to give back.
    /// </summary>
    public bool Ended(Guid invocationId, int attempt, TSession session, bool finished)
    {
        lock (_lock)
        {
            ref var entry = ref CollectionsMarshal.GetValueRefOrNullRef(_entries, invocationId);
            if (Unsafe.IsNullRef(ref entry) || !ReferenceEquals(entry.Session, session))
                return false;
            entry.Session = null;
            entry.Held = 0;
            _live.Remove(invocationId);
            if (finished)
            {
                var now = time.GetUtcNow();
                entry.Finished = attempt;
                entry.FinishedAt = now;
                _finishedOrder.Enqueue((invocationId, now));
                ForgetOld(now);
            }
            else if (entry.IsEmpty)
            {
                _entries.Remove(invocationId);
            }
            return true;
        }
    }

    public bool TryGetSession(Guid invocationId, out TSession session)
    {
        lock (_lock)
            return _live.TryGetValue(invocationId, out session!);
    }

    /// <summary>The attempt held here (claimed or live), if any.</summary>
    public int? HeldAttempt(Guid invocationId)
    {
        lock (_lock)
            return _entries.TryGetValue(invocationId, out var entry) && entry.Held != 0 ? entry.Held : null;
    }

    /// <summary>True when this attempt, or a later one, ran to its end here within <see cref="FinishedMemory"/>.</summary>
    public bool FinishedHere(Guid invocationId, int attempt)
    {
        lock (_lock)
            return _entries.TryGetValue(invocationId, out var entry) && RecentlyFinished(entry, attempt);
    }

    /// <summary>Whether this replica knows the invocation at all: held (claimed, running, paused) or recently finished here.</summary>
    public bool Knows(Guid invocationId)
    {
        lock (_lock)
            return _entries.TryGetValue(invocationId, out var entry) && (entry.Held != 0 || RecentlyFinished(entry, 1));
    }

    /// <summary>The live sessions (running or paused) right now, a copy.</summary>
    public TSession[] Sessions
    {
        get
        {
            lock (_lock)
                return [.. _live.Values];
        }
    }

    public int LiveCount
    {
        get
        {
            lock (_lock)
                return _live.Count;
        }
    }

    bool RecentlyFinished(in Entry entry, int attempt) =>
        entry.Finished != 0 && entry.Finished >= attempt && time.GetUtcNow() - entry.FinishedAt < FinishedMemory;

    void ForgetOld(DateTimeOffset now)
    {
        while (_finishedOrder.TryPeek(out var oldest) && (now - oldest.At >= FinishedMemory || _finishedOrder.Count > FinishedCapacity))
        {
            _finishedOrder.Dequeue();
            // A later finish of the same invocation renewed the entry: that one stays.
            ref var entry = ref CollectionsMarshal.GetValueRefOrNullRef(_entries, oldest.Id);
            if (!Unsafe.IsNullRef(ref entry) && entry.FinishedAt == oldest.At && entry.Finished != 0)
            {
                entry.Finished = 0;
                if (entry.IsEmpty)
                    _entries.Remove(oldest.Id);
            }
        }
    }
}

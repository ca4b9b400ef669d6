namespace RunnerService.IntegrationTests.Infrastructure;

/// <summary>
/// A worker written as a bash script, for misbehaviour a well-written SDK worker would never show: grandchildren
/// that keep pipes open, signal traps, a stdin nobody reads, endless stderr lines. Each task is one <c>case</c> arm on
/// the task name in the invocation line; hello is optional in the protocol, so the script sends none.
/// </summary>
static class ShellWorker
{
    const string Script = """
        #!/bin/bash
        IFS= read -r line
        case "$line" in
        *'"taskName":"quick"'*)
            echo '{"type":"result","result":1}' ;;
        *'"taskName":"nap"'*)
            sleep 3
            echo '{"type":"result","result":"rested"}' ;;
        *'"taskName":"big-leaf"'*)
            printf '{"type":"result","result":"%s"}\n' "$(head -c 200000 /dev/zero | tr '\0' x)" ;;
        *'"taskName":"deaf-waiter"'*)
            # asks for a 200 KB result, then never reads stdin again
            id=$(cat /proc/sys/kernel/random/uuid)
            printf '{"type":"invoke","invocationId":"%s","taskName":"big-leaf"}\n{"type":"wait","invocationIds":["%s"]}\n' "$id" "$id"
            exec sleep 1000 ;;
        *'"taskName":"orphan-crash"'*)
            sleep 1000 &
            echo "grandchild $!" >&2
            exit 3 ;;
        *'"taskName":"orphan-hang"'*)
            sleep 1000 &
            echo "grandchild $!" >&2
            wait ;;
        *'"taskName":"trap-term"'*)
            trap 'echo "cleanup-done $$" >&2; exit 0' TERM
            sleep 1000 &
            wait ;;
        *'"taskName":"ignore-term"'*)
            trap '' TERM
            sleep 1000 &
            echo "grandchild $!" >&2
            wait ;;
        *'"taskName":"count-resumes"'*)
            # waits for an id nobody runs (the test answers), then counts the resume lines it gets
            printf '{"type":"wait","invocationIds":["%s"]}\n' "$(cat /proc/sys/kernel/random/uuid)"
            IFS= read -r first
            n=1
            while IFS= read -r -t 2 more; do n=$((n+1)); done
            printf '{"type":"result","result":{"resumes":%d}}\n' "$n" ;;
        *'"taskName":"stderr-flood"'*)
            head -c 50000000 /dev/zero | tr '\0' x >&2
            echo '{"type":"result","result":"flooded"}' ;;
        *)
            echo '{"type":"error","error":{"type":"UnknownTask","message":"not a shell worker task"}}' ;;
        esac
        """;

    /// <summary>Writes the script into <paramref name="directory"/> and returns the runner settings that use it.</summary>
    public static Dictionary<string, string> Settings(string directory)
    {
        var path = Path.Combine(directory, "shell-worker.sh");
        File.WriteAllText(path, Script.Replace("\r\n", "\n", StringComparison.Ordinal) + "\n");
        if (OperatingSystem.IsLinux())
            File.SetUnixFileMode(path, UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute
                | UnixFileMode.GroupRead | UnixFileMode.GroupExecute | UnixFileMode.OtherRead | UnixFileMode.OtherExecute);
        return new Dictionary<string, string> { ["Runner__WorkerCommand"] = path };
    }
}

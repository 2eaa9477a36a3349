namespace AttentionActors.Kernels.Partials;

/// <summary>
/// A node of the canonical merge tree: the aligned block range
/// <c>[Index·2^Level, (Index + 1)·2^Level)</c>. Leaves (level 0) are single key blocks.
/// </summary>
public readonly record struct TreeNode(int Level, int Index)
{
    public long Start => (long)Index << Level;

    public long End => (long)(Index + 1) << Level;

    public override string ToString() => $"blocks [{Start}, {End})";
}

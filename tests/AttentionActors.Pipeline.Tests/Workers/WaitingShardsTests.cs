using Akka.Actor;
using AttentionActors.Kernels;
using AttentionActors.Pipeline.Planning;
using AttentionActors.Pipeline.Workers;

namespace AttentionActors.Pipeline.Tests.Workers;

/// <summary>
/// Which shard a node takes from the queue: its own first, and when it steals, the one whose K/V
/// blocks its store lacks the fewest of. One batch, two key heads of 1,024 keys in 16 blocks, each
/// head's queries in four row ranges of whole rows of keys (blocks [0, 4), [0, 8), [0, 12), [0, 16) when causal).
/// </summary>
public class WaitingShardsTests
{
    private static readonly JobId Job = new("steal-test");

    private static ComputeShard Work(AttentionGeometry g, int id, int head, int quarter, string home)
    {
        int blockEnd = g.Options.Causal ? 4 * (quarter + 1) : 16;
        var shard = new Shard(id, 0, head, 256 * quarter, 256, 0, blockEnd, 0, 1e6, 0);
        return new ComputeShard(Job, shard, 1, g, null, null, [], ActorRefs.Nobody, "", ActorRefs.Nobody, Home: home);
    }

    private static AttentionGeometry Geometry(bool causal)
        => AttentionGeometry.Create(new("Q", 1, 2, 1024, 32), new("K", 1, 2, 1024, 32), new("V", 1, 2, 1024, 32), new AttentionOptions { Causal = causal, BlockSize = 64 });

    /// <summary>Head 0 dealt to node A, head 1 to node B.</summary>
    private static WaitingShards Dealt(bool causal)
    {
        var g = Geometry(causal);
        var shards = new WaitingShards();
        for (int head = 0; head < 2; head++)
        {
            for (int quarter = 0; quarter < 4; quarter++)
            {
                shards.Add(Work(g, (head * 4) + quarter, head, quarter, head == 0 ? "A" : "B"));
            }
        }

        return shards;
    }

    private static ComputeShard? Take(WaitingShards shards, string node, bool sent = true, Func<string, bool>? live = null)
        => shards.Take(node, _ => true, _ => sent, live ?? (_ => true));

    private static string Show(ComputeShard? work) => work is null ? "nothing" : $"head {work.Shard.Head} rows [{work.Shard.RowStart}, {work.Shard.RowStart + work.Shard.RowCount})";

    [Fact]
    public void A_node_takes_its_own_shards_first_a_heads_top_rows_first()
    {
        var shards = Dealt(causal: true);
        Assert.Equal("head 1 rows [768, 1024)", Show(Take(shards, "B")));
        Assert.Equal("head 1 rows [512, 768)", Show(Take(shards, "B")));
        Assert.Equal("head 0 rows [768, 1024)", Show(Take(shards, "A")));
    }

    [Fact]
    public void Owner_and_thief_meet_in_the_middle_of_a_head()
    {
        // A works down from the top, C up from the bottom: C fetches the blocks of the rows it takes, not the whole head.
        var shards = Dealt(causal: true);
        Assert.Equal("head 0 rows [768, 1024)", Show(Take(shards, "A")));
        Take(shards, "B");
        Take(shards, "B");
        Assert.Equal("head 0 rows [0, 256)", Show(Take(shards, "C")));
        Assert.Equal("head 0 rows [512, 768)", Show(Take(shards, "A")));
        Assert.Equal("head 0 rows [256, 512)", Show(Take(shards, "A")));
        Assert.Equal("head 1 rows [0, 256)", Show(Take(shards, "C")));
    }

    [Fact]
    public void Under_a_causal_mask_a_thief_takes_a_heads_rows_from_the_bottom_and_stays_on_the_head_it_holds()
    {
        // The top rows of a head would cost the thief all 16 of its blocks; the bottom ones 4, then 4 more each.
        var shards = Dealt(causal: true);
        Assert.Equal("head 0 rows [0, 256)", Show(Take(shards, "C")));
        Assert.Equal("head 0 rows [256, 512)", Show(Take(shards, "C")));
        Assert.Equal("head 0 rows [512, 768)", Show(Take(shards, "C")));

        // A's last shard stays with A while A lives; a node that is gone loses it to the thief.
        for (int i = 0; i < 4; i++)
        {
            Take(shards, "B");
        }

        Assert.Equal("nothing", Show(Take(shards, "C")));
        Assert.Equal("head 0 rows [768, 1024)", Show(Take(shards, "C", live: home => home != "A")));
    }

    [Fact]
    public void A_thief_takes_first_what_its_store_already_holds()
    {
        // B finished head 1 and took head 0's bottom; A's head-0 shards below B's held blocks cost B nothing.
        var g = Geometry(causal: true);
        var shards = new WaitingShards();
        shards.Add(Work(g, 0, 0, 0, "B"));
        shards.Add(Work(g, 1, 0, 2, "B"));
        shards.Add(Work(g, 2, 0, 1, "A"));
        shards.Add(Work(g, 3, 1, 0, "A"));
        shards.Add(Work(g, 4, 1, 3, "A"));
        shards.Add(Work(g, 5, 0, 3, "A"));
        Take(shards, "B");
        Take(shards, "B");
        Assert.Equal("head 0 rows [256, 512)", Show(Take(shards, "B")));
    }

    [Fact]
    public void Without_a_mask_every_steal_costs_a_whole_head_so_the_thief_takes_the_far_end_of_the_richest_stretch()
    {
        var shards = Dealt(causal: false);
        Take(shards, "A");
        Assert.Equal("head 1 rows [768, 1024)", Show(Take(shards, "C")));

        // Then the head it holds, whose blocks cost nothing more.
        Assert.Equal("head 1 rows [512, 768)", Show(Take(shards, "C")));
    }

    [Fact]
    public void Nothing_is_stolen_before_all_of_a_jobs_shards_arrived_nor_a_live_nodes_last_one()
    {
        var shards = Dealt(causal: true);
        Assert.Null(Take(shards, "C", sent: false));
        for (int i = 0; i < 3; i++)
        {
            Take(shards, "A");
            Take(shards, "B");
        }

        Assert.Null(Take(shards, "C"));
        Assert.Equal("head 1 rows [0, 256)", Show(Take(shards, "C", live: home => home != "B")));
        Assert.Equal(1, shards.Count);
    }
}

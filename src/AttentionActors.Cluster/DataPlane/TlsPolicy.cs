using System.Net.Security;

namespace AttentionActors.Cluster.DataPlane;

/// <summary>The data plane's TLS 1.3 suites: AES-128-GCM first (the fastest of them with AES instructions), AES-256-GCM after.</summary>
internal static class TlsPolicy
{
    public static CipherSuitesPolicy? CipherSuites { get; } = OperatingSystem.IsLinux() || OperatingSystem.IsMacOS()
        ? new CipherSuitesPolicy([TlsCipherSuite.TLS_AES_128_GCM_SHA256, TlsCipherSuite.TLS_AES_256_GCM_SHA384])
        : null;
}

using System.Net.Security;
using System.Security.Cryptography.X509Certificates;

namespace AttentionActors.Cluster.Security;

/// <summary>What a certificate of the cluster's CA lets its holder be: a node (any role, and the operator's commands) or a client (its own jobs only).</summary>
public enum PeerRole
{
    Node,
    Client,
}

/// <summary>
/// This process's TLS identity in a cluster: its certificate (a node's or a client's, with its
/// private key) and the cluster's CA, the only root it trusts. A peer is accepted when its
/// certificate chains to that CA (no other root, no revocation lookups — the network is closed) and
/// names its role in the subject's OU; host names are not checked, since nodes move between
/// addresses and containers. Every TLS connection of the cluster — Akka.Remote between nodes and the
/// data plane — is mutual: both ends present a certificate.
/// </summary>
public sealed class ClusterCertificates
{
    /// <summary>The subject's organization every certificate of a cluster carries.</summary>
    public const string Organization = "AttentionActors";

    public ClusterCertificates(X509Certificate2 own, X509Certificate2 authority)
    {
        ArgumentNullException.ThrowIfNull(own);
        ArgumentNullException.ThrowIfNull(authority);
        if (!own.HasPrivateKey)
        {
            throw new ArgumentException($"certificate {own.Subject} has no private key", nameof(own));
        }

        Own = own;
        Authority = authority;
        Role = RoleOf(own) ?? throw new ArgumentException($"certificate {own.Subject} names no role (OU=node or OU=client)", nameof(own));
        if (Check(own, out string? problem) is null)
        {
            throw new ArgumentException($"certificate {own.Subject} is not one of this cluster's: {problem}", nameof(own));
        }
    }

    public X509Certificate2 Own { get; }

    public X509Certificate2 Authority { get; }

    /// <summary>The role this process's own certificate gives it.</summary>
    public PeerRole Role { get; }

    /// <summary>
    /// Loads a PKCS#12 file (certificate and key) and the CA's PEM; the password, if any, comes from
    /// a file or an environment variable, never the command line. Throws <see cref="CertificateFileException"/> naming the file.
    /// </summary>
    public static ClusterCertificates Load(string certificate, string authority, string? password = null)
    {
        X509Certificate2 own, ca;
        foreach (var (path, what) in new[] { (certificate, "certificate"), (authority, "CA certificate") })
        {
            if (!File.Exists(path))
            {
                throw new CertificateFileException($"{what} {path}: no such file (`attention cluster certs` makes a cluster's CA and certificates)");
            }
        }

        try
        {
            own = X509CertificateLoader.LoadPkcs12FromFile(certificate, password, X509KeyStorageFlags.EphemeralKeySet);
        }
        catch (Exception ex) when (ex is System.Security.Cryptography.CryptographicException or IOException or UnauthorizedAccessException)
        {
            throw new CertificateFileException($"certificate {certificate}: {ex.Message.TrimEnd('.')} (a PKCS#12 file with its key, as `attention cluster certs` writes; a password comes from its file or variable)");
        }

        try
        {
            ca = X509Certificate2.CreateFromPem(File.ReadAllText(authority));
        }
        catch (Exception ex) when (ex is System.Security.Cryptography.CryptographicException or IOException or UnauthorizedAccessException or ArgumentException)
        {
            throw new CertificateFileException($"CA certificate {authority}: {ex.Message.TrimEnd('.')} (the cluster CA's PEM)");
        }

        try
        {
            return new ClusterCertificates(own, ca);
        }
        catch (ArgumentException ex)
        {
            throw new CertificateFileException($"{certificate}: {ex.Message}");
        }
    }

    /// <summary>The role a certificate of this cluster gives its holder, or null with <paramref name="problem"/> saying why it is not one.</summary>
    public PeerRole? Check(X509Certificate? certificate, out string? problem)
    {
        if (certificate is null)
        {
            problem = "no certificate was presented";
            return null;
        }

        using var leaf = certificate as X509Certificate2 is { } given ? X509CertificateLoader.LoadCertificate(given.RawData) : X509CertificateLoader.LoadCertificate(certificate.GetRawCertData());
        using var chain = new X509Chain();
        chain.ChainPolicy.TrustMode = X509ChainTrustMode.CustomRootTrust;
        chain.ChainPolicy.CustomTrustStore.Add(Authority);
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        chain.ChainPolicy.VerificationFlags = X509VerificationFlags.NoFlag;
        if (!chain.Build(leaf))
        {
            problem = $"{leaf.Subject} does not chain to the cluster's CA ({string.Join("; ", chain.ChainStatus.Select(s => s.StatusInformation.Trim()))})";
            return null;
        }

        var role = RoleOf(leaf);
        problem = role is null ? $"{leaf.Subject} names no role" : null;
        return role;
    }

    /// <summary>A TLS validation callback that admits peers of <paramref name="allowed"/> roles only (policy errors from host names are ignored: see the class summary).</summary>
    public RemoteCertificateValidationCallback Validator(params PeerRole[] allowed)
        => (_, certificate, _, _) => Check(certificate, out _) is { } role && allowed.Contains(role);

    private static PeerRole? RoleOf(X509Certificate2 certificate)
    {
        string ou = certificate.SubjectName.EnumerateRelativeDistinguishedNames()
            .Where(n => n.GetSingleElementType().FriendlyName == "OU")
            .Select(n => n.GetSingleElementValue())
            .FirstOrDefault() ?? "";
        return ou switch { "node" => PeerRole.Node, "client" => PeerRole.Client, _ => null };
    }
}

/// <summary>A certificate or key file that cannot be used; the message names the file and why.</summary>
public sealed class CertificateFileException : Exception
{
    public CertificateFileException()
    {
    }

    public CertificateFileException(string message)
        : base(message)
    {
    }

    public CertificateFileException(string message, Exception innerException)
        : base(message, innerException)
    {
    }
}

package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"nodecache/pkg/credentials"
	"nodecache/pkg/diskstore"
	"nodecache/pkg/tagstore"
	"nodecache/pkg/upstream"
)

// Defaults for the store's bounds.
const (
	// defaultMaxSizeCap and defaultMaxSizePercent: the store takes 20 GiB
	// or 15% of its filesystem, whichever is smaller; the node's disk is
	// shared with the kubelet's images and the pods' logs.
	defaultMaxSizeCap     = 20 << 30
	defaultMaxSizePercent = 15
)

// StoreBounds resolves MaxSize and MinFree against the filesystem of
// total bytes that holds the data directory.
func (cfg *Config) StoreBounds(total int64) (maxSize, minFree int64) {
	if cfg.MaxSize != nil {
		maxSize = cfg.MaxSize.Resolve(total)
	} else {
		maxSize = min(int64(defaultMaxSizeCap), Size{Percent: defaultMaxSizePercent}.Resolve(total))
	}
	return maxSize, cfg.MinFree.Resolve(total)
}

// openStore opens the store with its bounds resolved against the
// filesystem that holds the data directory, and reports whether its
// index still loads in the background (the line it logged says which).
func openStore(cfg Config, log *slog.Logger) (store *diskstore.Store, maxSize int64, loading bool, err error) {
	if err := os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return nil, 0, false, fmt.Errorf("--data-dir %s: %w", cfg.DataDir, err)
	}
	total, _, err := diskstore.Capacity(cfg.DataDir)
	if err != nil {
		return nil, 0, false, fmt.Errorf("--data-dir %s: %w", cfg.DataDir, err)
	}
	maxSize, minFree := cfg.StoreBounds(total)
	start := time.Now()
	store, err = diskstore.Open(cfg.DataDir,
		diskstore.WithMaxSize(maxSize), diskstore.WithMinFree(minFree),
		diskstore.WithIdleTTL(zeroMeans(cfg.TTL, diskstore.NoLimit)), diskstore.WithLogger(log),
		diskstore.WithScrubInterval(zeroMeans(cfg.ScrubInterval, diskstore.NoScrub)))
	if err != nil {
		return nil, 0, false, err
	}
	attrs := []any{"data_dir", cfg.DataDir, "max_size", FormatBytes(maxSize), "min_free", FormatBytes(minFree),
		"ttl", cfg.TTL, "scrub_interval", cfg.ScrubInterval, "took", time.Since(start).Round(time.Millisecond)}
	if loading = storeLoading(store); loading {
		log.Info("store opened; loading its index in the background", attrs...)
		return store, maxSize, true, nil
	}
	if err := store.LoadErr(); err != nil {
		// A background load that failed already: the start fails, as it
		// would have with the load in Open.
		store.Close()
		return nil, 0, false, fmt.Errorf("load the store's index: %w", err)
	}
	st := store.Stats()
	log.Info("store loaded", append(attrs, "entries", st.Entries, "bytes", st.Bytes)...)
	return store, maxSize, false, nil
}

// storeLoading reports whether the store's index is still loading in the
// background (diskstore.Store.Loaded).
func storeLoading(store *diskstore.Store) bool {
	select {
	case <-store.Loaded():
		return false
	default:
		return true
	}
}

// awaitLoad waits for the store's background load, if one runs, and logs
// its end once. A load that fails ends the daemon with its error, as it
// did when the load was part of the start: the store would serve on, but
// never evict again. The error is checked whatever New saw: a load may
// fail between Open and New's look at it.
func (d *Daemon) awaitLoad(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return nil
	case <-d.store.Loaded():
	}
	if err := d.store.LoadErr(); err != nil {
		return fmt.Errorf("load the store's index: %w", err)
	}
	if !d.storeLoading {
		return nil // loaded in Open, or before openStore looked: logged then
	}
	st := d.store.Stats()
	d.log.Info("store loaded", "data_dir", d.cfg.DataDir, "entries", st.Entries, "bytes", st.Bytes,
		"took", time.Since(d.storeOpened).Round(time.Millisecond))
	return nil
}

// openTags opens the tag records in --data-dir/tags, a directory the
// store does not read. Records older than --ttl are dropped, as content
// idle that long is. If the directory cannot be written, the records are
// kept in memory and the daemon runs on.
func openTags(cfg Config, log *slog.Logger) (*tagstore.Store, error) {
	dir := filepath.Join(cfg.DataDir, "tags")
	tags, err := tagstore.Open(dir, tagstore.WithMaxAge(cfg.TTL), tagstore.WithLogger(log))
	if err != nil {
		// A read-only data directory still serves its content: the
		// tags are then kept in memory, as before they had a file.
		log.Warn("tag records kept in memory only: they will not survive a restart", "dir", dir, "error", err)
		return tagstore.Open("", tagstore.WithLogger(log))
	}
	log.Info("tag records loaded", "dir", dir, "records", tags.Len())
	return tags, nil
}

// newUpstream opens the credentials, if any, into d.creds and builds the
// upstream client, which reads the hosts directory with the mirror
// listeners' addresses as its loop guard.
func (d *Daemon) newUpstream() (*upstream.Client, error) {
	cfg := d.cfg
	version := cfg.Version
	if version == "" {
		version = "dev"
	}
	opts := []upstream.Option{upstream.WithUserAgent("nodecache/" + version),
		upstream.WithStallTimeout(cfg.UpstreamStallTimeout), upstream.WithLogger(d.log)}
	if cfg.DockerConfig != "" || cfg.CredentialsFile != "" {
		creds, err := credentials.Open(credentials.Files{DockerConfig: cfg.DockerConfig, CredentialsFile: cfg.CredentialsFile}, credentials.WithLogger(d.log))
		if err != nil {
			return nil, credentialsError(cfg, err)
		}
		d.creds = creds
		opts = append(opts, upstream.WithCredentials(creds))
	}
	if cfg.HostsDir != "" {
		opts = append(opts, upstream.WithHostsDir(cfg.HostsDir, d.ls.addresses()))
	}
	return upstream.New(cfg.Registries, opts...)
}

// credentialsError names the flag of the file that could not be loaded.
func credentialsError(cfg Config, err error) error {
	var fe *credentials.FileError
	if errors.As(err, &fe) {
		switch fe.Path {
		case cfg.DockerConfig:
			return configErrorf("--docker-config: %v", err)
		case cfg.CredentialsFile:
			return configErrorf("--credentials-file: %v", err)
		}
	}
	return configErrorf("--docker-config/--credentials-file: %v", err)
}

// zeroMeans maps a setting's 0, which the flags give a meaning of their
// own ("ask every time", "no limit"), to the option value that means it:
// to an option, zero means its default.
func zeroMeans(setting, off time.Duration) time.Duration {
	if setting == 0 {
		return off
	}
	return setting
}

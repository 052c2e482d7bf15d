// A stand-in for Stakater Reloader, which the Go module proxy refuses to
// serve here: the same architecture and the same annotations, with
// client-go. Informers hold every Secret and ConfigMap (full objects, all
// namespaces) as Reloader's do; on a change of data it lists the
// namespace's Deployments and, for each annotated
// `secret.reloader.stakater.com/reload: <name>` (or the configmap form),
// patches the pod template annotation `reloader.stakater.com/last-reloaded-from`
// (Reloader's annotations strategy). Used only by certpin-bench.
package main

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/workqueue"
)

type change struct{ kind, ns, name, hash string }

func hashData(data map[string][]byte, sdata map[string]string) string {
	keys := make([]string, 0, len(data)+len(sdata))
	for k := range data {
		keys = append(keys, k)
	}
	for k := range sdata {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	h := sha1.New()
	for _, k := range keys {
		h.Write([]byte(k))
		if v, ok := data[k]; ok {
			h.Write(v)
		} else {
			h.Write([]byte(sdata[k]))
		}
	}
	return hex.EncodeToString(h.Sum(nil))
}

func main() {
	cfg, err := clientcmd.BuildConfigFromFlags("", os.Getenv("KUBECONFIG"))
	if err != nil {
		log.Fatalf("kubeconfig: %v", err)
	}
	cs := kubernetes.NewForConfigOrDie(cfg)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	queue := workqueue.NewTyped[change]()
	factory := informers.NewSharedInformerFactory(cs, 0)
	onUpdate := func(kind string) cache.ResourceEventHandlerFuncs {
		return cache.ResourceEventHandlerFuncs{UpdateFunc: func(o, n interface{}) {
			var oh, nh, ns, name string
			switch kind {
			case "secret":
				a, b := o.(*corev1.Secret), n.(*corev1.Secret)
				oh, nh, ns, name = hashData(a.Data, a.StringData), hashData(b.Data, b.StringData), b.Namespace, b.Name
			default:
				a, b := o.(*corev1.ConfigMap), n.(*corev1.ConfigMap)
				oh, nh, ns, name = hashData(a.BinaryData, a.Data), hashData(b.BinaryData, b.Data), b.Namespace, b.Name
			}
			if oh != nh {
				queue.Add(change{kind, ns, name, nh})
			}
		}}
	}
	factory.Core().V1().Secrets().Informer().AddEventHandler(onUpdate("secret"))
	factory.Core().V1().ConfigMaps().Informer().AddEventHandler(onUpdate("configmap"))
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	log.Printf("caches synced")
	go func() {
		<-ctx.Done()
		queue.ShutDown()
	}()
	for {
		c, shutdown := queue.Get()
		if shutdown {
			return
		}
		if err := reload(ctx, cs, c); err != nil {
			log.Printf("reload %s/%s: %v", c.ns, c.name, err)
		}
		queue.Done(c)
	}
}

func reload(ctx context.Context, cs *kubernetes.Clientset, c change) error {
	deps, err := cs.AppsV1().Deployments(c.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	key := c.kind + ".reloader.stakater.com/reload"
	from, _ := json.Marshal(map[string]string{"type": strings.ToUpper(c.kind[:1]) + c.kind[1:], "name": c.name, "namespace": c.ns, "hash": c.hash})
	for _, d := range deps.Items {
		names := strings.Split(d.Annotations[key], ",")
		found := false
		for _, n := range names {
			found = found || strings.TrimSpace(n) == c.name
		}
		if !found {
			continue
		}
		patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"template": map[string]any{"metadata": map[string]any{
			"annotations": map[string]string{"reloader.stakater.com/last-reloaded-from": string(from)}}}}})
		if _, err := cs.AppsV1().Deployments(c.ns).Patch(ctx, d.Name, types.StrategicMergePatchType, patch, metav1.PatchOptions{}); err != nil {
			return fmt.Errorf("patching %s: %w", d.Name, err)
		}
	}
	return nil
}
